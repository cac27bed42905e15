//! The deployment files, parsed and checked for what makes a cluster work: the Kubernetes manifests
//! (a StatefulSet whose peers list, node ids, ports, probes, volume and secret agree with its
//! Services, PodDisruptionBudget and the binary's own flag parsing) and the compose file (every
//! service in the peers list under its peer-network alias, the secret required from the
//! environment). A schema validator, where installed, runs in .ci/run; these checks are the ones a
//! schema cannot make.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use raftlot::config::{id_from_hostname, parse_peers};
use yaml_rust2::{Yaml, YamlLoader};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn load(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

fn text<'a>(doc: &'a Yaml, what: &str) -> &'a str {
    doc.as_str().unwrap_or_else(|| panic!("{what} is not a string: {doc:?}"))
}

fn int(doc: &Yaml, what: &str) -> i64 {
    doc.as_i64().unwrap_or_else(|| panic!("{what} is not an integer: {doc:?}"))
}

fn list<'a>(doc: &'a Yaml, what: &str) -> &'a [Yaml] {
    doc.as_vec().unwrap_or_else(|| panic!("{what} is not a list: {doc:?}"))
}

/// `map[key]`, also through a YAML merge key (`<<: *anchor`), which the compose file uses and the
/// parser leaves unresolved.
fn field<'a>(map: &'a Yaml, key: &str) -> &'a Yaml {
    match &map[key] {
        Yaml::BadValue => &map["<<"][key],
        value => value,
    }
}

/// The k8s manifests by kind and name; panics on a duplicate.
fn manifests() -> BTreeMap<(String, String), Yaml> {
    let mut docs = BTreeMap::new();
    for file in kustomization_resources() {
        for doc in load(&deploy_dir().join("k8s").join(&file)) {
            let key = (text(&doc["kind"], "kind").to_string(), text(&doc["metadata"]["name"], "name").to_string());
            assert!(docs.insert(key.clone(), doc).is_none(), "{key:?} is defined twice");
        }
    }
    docs
}

fn kustomization_resources() -> Vec<String> {
    let kustomization = load(&deploy_dir().join("k8s/kustomization.yaml")).remove(0);
    list(&kustomization["resources"], "resources").iter().map(|r| text(r, "resource").to_string()).collect()
}

/// A container's environment as name -> entry.
fn env_of(container: &Yaml) -> BTreeMap<String, Yaml> {
    list(&container["env"], "env").iter().map(|e| (text(&e["name"], "env name").to_string(), e.clone())).collect()
}

#[test]
fn kustomization_lists_every_manifest() {
    let mut on_disk: Vec<String> = std::fs::read_dir(deploy_dir().join("k8s"))
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut listed = kustomization_resources();
    listed.sort();
    assert_eq!(listed, on_disk, "kubectl apply -k would leave a manifest out");
}

#[test]
fn the_statefulset_runs_three_nodes_that_find_each_other_by_dns() {
    let docs = manifests();
    let sts = &docs[&("StatefulSet".to_string(), "raftlot".to_string())];
    let name = text(&sts["metadata"]["name"], "statefulset name");
    let spec = &sts["spec"];
    let replicas = int(&spec["replicas"], "replicas");
    assert_eq!(replicas, 3);
    assert_eq!(text(&spec["podManagementPolicy"], "podManagementPolicy"), "Parallel");

    // The headless Service that gives pods their names, and that publishes them before they are ready.
    let service_name = text(&spec["serviceName"], "serviceName");
    let headless = &docs[&("Service".to_string(), service_name.to_string())];
    assert_eq!(text(&headless["spec"]["clusterIP"], "clusterIP"), "None", "the peer Service must be headless");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"].as_bool(), Some(true));

    // Every selector picks exactly the pods the template labels.
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(&spec["selector"]["matchLabels"], labels);
    for (kind, obj) in docs.iter().filter(|((kind, _), _)| kind != "StatefulSet") {
        let selector =
            if kind.0 == "Service" { &obj["spec"]["selector"] } else { &obj["spec"]["selector"]["matchLabels"] };
        assert_eq!(selector, labels, "{kind:?} selects other pods than the StatefulSet's");
    }

    let containers = list(&spec["template"]["spec"]["containers"], "containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let ports: BTreeMap<&str, i64> = list(&container["ports"], "ports")
        .iter()
        .map(|p| (text(&p["name"], "port name"), int(&p["containerPort"], "containerPort")))
        .collect();
    let (client_port, peer_port) = (ports["client"], ports["peer"]);

    // Probes ask the gRPC health service on the client port.
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(int(&container[probe]["grpc"]["port"], probe), client_port, "{probe} must use the client port");
    }
    for resource in ["cpu", "memory"] {
        assert!(!container["resources"]["requests"][resource].is_badvalue(), "no {resource} request");
    }

    let env = env_of(container);
    let secret = &env["RAFTLOT_CLUSTER_SECRET"]["valueFrom"]["secretKeyRef"];
    assert!(secret["name"].as_str().is_some() && secret["key"].as_str().is_some(), "the secret comes from a Secret");
    assert!(env["RAFTLOT_CLUSTER_SECRET"]["value"].is_badvalue(), "no secret in the manifest itself");
    assert_eq!(text(&env["RAFTLOT_ID_FROM_HOSTNAME"]["value"], "RAFTLOT_ID_FROM_HOSTNAME"), "true");
    assert!(!env.contains_key("RAFTLOT_ID"), "one id for every pod would clash");
    for (var, port) in [("RAFTLOT_LISTEN", client_port), ("RAFTLOT_PEER_LISTEN", peer_port)] {
        let addr: SocketAddr = text(&env[var]["value"], var).parse().expect("a listen address");
        assert_eq!(i64::from(addr.port()), port, "{var} and the container port differ");
    }

    // The data directory is the mounted claim.
    let data_dir = text(&env["RAFTLOT_DATA_DIR"]["value"], "RAFTLOT_DATA_DIR");
    let mount = list(&container["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(data_dir))
        .expect("a volume mounted at the data directory");
    let claims = list(&spec["volumeClaimTemplates"], "volumeClaimTemplates");
    assert!(
        claims.iter().any(|c| c["metadata"]["name"] == mount["name"]),
        "the data directory is not on a PersistentVolumeClaim"
    );

    // Peers: one per replica, pod N at its stable name is the node its host name makes it.
    let namespace = "some-ns";
    let spec_text = text(&env["RAFTLOT_PEERS"]["value"], "RAFTLOT_PEERS").replace("$(POD_NAMESPACE)", namespace);
    let downward = &env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"];
    assert_eq!(downward.as_str(), Some("metadata.namespace"), "$(POD_NAMESPACE) must be defined before use");
    let members = parse_peers(&spec_text).expect("RAFTLOT_PEERS parses as the binary parses it");
    assert_eq!(members.len() as i64, replicas, "the peers list and replicas differ");
    for ordinal in 0..replicas {
        let pod = format!("{name}-{ordinal}");
        let id = id_from_hostname(&pod).expect("a pod name yields an id");
        let member = members.get(&id).unwrap_or_else(|| panic!("pod {pod} is node {id}, which is not in the peers"));
        let host = format!("{pod}.{service_name}.{namespace}.svc.cluster.local");
        assert_eq!((member.client_addr.host(), i64::from(member.client_addr.port())), (host.as_str(), client_port));
        assert_eq!((member.peer_addr.host(), i64::from(member.peer_addr.port())), (host.as_str(), peer_port));
    }
    let headless_ports: Vec<i64> =
        list(&headless["spec"]["ports"], "ports").iter().map(|p| int(&p["port"], "port")).collect();
    assert!(headless_ports.contains(&peer_port) && headless_ports.contains(&client_port), "{headless_ports:?}");
}

#[test]
fn the_disruption_budget_keeps_a_quorum_and_clients_reach_the_client_port() {
    let docs = manifests();
    let pdb = &docs[&("PodDisruptionBudget".to_string(), "raftlot".to_string())];
    assert_eq!(int(&pdb["spec"]["maxUnavailable"], "maxUnavailable"), 1);
    let client = &docs[&("Service".to_string(), "raftlot".to_string())];
    assert!(client["spec"]["clusterIP"].as_str() != Some("None"), "clients need a load-balanced address");
    let ports = list(&client["spec"]["ports"], "ports");
    assert!(ports.iter().any(|p| p["targetPort"].as_str() == Some("client")), "no client port: {ports:?}");
    assert!(ports.iter().all(|p| p["targetPort"].as_str() != Some("peer")), "the peer port is not for clients");
}

#[test]
fn compose_names_every_node_on_the_peer_network_and_requires_the_secret() {
    let compose = load(&deploy_dir().join("compose.yaml")).remove(0);
    let services = compose["services"].as_hash().expect("services");
    let mut aliases = BTreeMap::new();
    for (service, def) in services {
        let service = text(service, "service name");
        let env = field(def, "environment");
        assert_eq!(text(field(def, "image"), "image"), "${RAFTLOT_IMAGE:-raftlot:local}", "{service}: image");
        let id: u64 = text(field(env, "RAFTLOT_ID"), "RAFTLOT_ID").parse().expect("a numeric id");
        let secret = text(field(env, "RAFTLOT_CLUSTER_SECRET"), "RAFTLOT_CLUSTER_SECRET");
        assert!(
            secret.starts_with("${RAFTLOT_CLUSTER_SECRET:?"),
            "{service}: the secret must be required from the environment"
        );
        let peers = parse_peers(text(field(env, "RAFTLOT_PEERS"), "RAFTLOT_PEERS")).expect("RAFTLOT_PEERS parses");
        assert_eq!(peers.len(), services.len(), "{service}: the peers list and the services differ");
        let alias = list(&def["networks"]["peers"]["aliases"], "aliases")[0].as_str().expect("an alias").to_string();
        assert_eq!(peers[&id].peer_addr.host(), alias, "{service}: node {id} is not reached by its alias");
        assert!(!def["volumes"].is_badvalue(), "{service} has no volume");
        aliases.insert(id, alias);
    }
    assert_eq!(aliases.len(), services.len(), "two services share a node id");
    assert_eq!(compose["networks"]["peers"]["internal"].as_bool(), Some(true), "the peer network must be internal");
}
