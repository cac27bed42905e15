//! The TTL cache across three real node processes: a cluster-wide single-flight claim, an abandoned
//! claim passing on after its holder dies, expiry at one log position on every node, and bad input.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, TestCluster, WAIT};
use raftlot::pb::v1::{CacheGetRequest, ClaimReply, ClaimRequest, ClaimStatus, PutRequest, ReadConsistency};
use tonic::Code;

async fn claim(cluster: &TestCluster, node: u64, key: &str, holder: &str, lease_ms: u64, wait_ms: u64) -> ClaimReply {
    let request = ClaimRequest { key: key.into(), lease_ms, holder: holder.into(), wait_ms };
    cluster.cache(node).claim(request).await.expect("claim").into_inner()
}

async fn get(
    cluster: &TestCluster,
    node: u64,
    key: &str,
    consistency: ReadConsistency,
) -> raftlot::pb::v1::CacheGetReply {
    let request = CacheGetRequest { key: key.into(), consistency: consistency as i32 };
    cluster.cache(node).get(request).await.expect("get").into_inner()
}

/// 1. 50 callers spread over the three nodes claim one missing key at once: exactly one is
/// GRANTED, the other 49 are told that caller holds it; 2. the 49 claim again, waiting; 3. the
/// holder fills the key with its token; 4. every waiter gets the value (HIT), and a LINEARIZABLE
/// read on every node returns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_callers_one_claim_and_everyone_gets_the_fill() {
    let cluster = Arc::new(TestCluster::start(3).await);
    let ids = cluster.ids();
    let key = "report:42";
    let claims = (0..50).map(|i| {
        let (cluster, node) = (cluster.clone(), ids[i % ids.len()]);
        tokio::spawn(async move { (i, claim(&cluster, node, key, &format!("caller-{i}"), 10_000, 0).await) })
    });
    let replies: Vec<_> = futures::future::join_all(claims).await.into_iter().map(|r| r.expect("task")).collect();
    let granted: Vec<_> = replies.iter().filter(|(_, r)| r.status() == ClaimStatus::Granted).collect();
    assert_eq!(granted.len(), 1, "exactly one caller may fill the key: {replies:?}");
    let (winner, grant) = granted[0];
    let holder = format!("caller-{winner}");
    for (i, r) in &replies {
        if i != winner {
            assert_eq!(r.status(), ClaimStatus::Held, "caller {i}: {r:?}");
            assert_eq!(r.holder, holder, "caller {i} must be told who holds the claim");
        }
    }

    let waiters: Vec<_> = (0..50)
        .filter(|i| i != winner)
        .map(|i| {
            let (cluster, node) = (cluster.clone(), ids[i % ids.len()]);
            tokio::spawn(async move { claim(&cluster, node, key, &format!("caller-{i}"), 10_000, 8_000).await })
        })
        .collect();
    let put = PutRequest {
        key: key.into(),
        value: b"42 pages".to_vec(),
        ttl_ms: 60_000,
        claim_token: grant.claim_token.clone(),
    };
    let stored = cluster.cache(ids[winner % ids.len()]).put(put).await.expect("the holder's put").into_inner();
    for w in futures::future::join_all(waiters).await {
        let r = w.expect("task");
        assert_eq!(r.status(), ClaimStatus::Hit, "{r:?}");
        assert_eq!((r.value.as_slice(), r.version), (&b"42 pages"[..], stored.version));
    }
    for id in &ids {
        let r = get(&cluster, *id, key, ReadConsistency::Linearizable).await;
        assert!(r.found && r.value == b"42 pages", "node {id}: {r:?}");
    }
    // The token was spent by the fill; a second put with it is refused.
    let again =
        PutRequest { key: key.into(), value: b"x".to_vec(), ttl_ms: 1_000, claim_token: grant.claim_token.clone() };
    let err = cluster.cache(ids[0]).put(again).await.expect_err("a spent token");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    println!("50 callers: 1 granted ({holder}), 49 held, 49 waiters served the fill at version {}", stored.version);
}

/// 1. a caller claims through follower F with a short lease; 2. F is SIGKILLed, and its caller with
/// it; 3. others are told the claim is held until the lease runs out, then one of them is GRANTED
/// a new token; 4. the dead holder's token is refused, the new one fills the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_claim_expires_and_passes_to_another() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    let (doomed, survivor) = (followers[0], followers[1]);
    let lease_ms = 1_500;
    let first = claim(&cluster, doomed, "job:7", "worker-on-doomed-node", lease_ms, 0).await;
    assert_eq!(first.status(), ClaimStatus::Granted);
    let granted_at = Instant::now();
    cluster.kill(doomed);

    let held = claim(&cluster, survivor, "job:7", "worker-2", lease_ms, 0).await;
    assert_eq!((held.status(), held.holder.as_str()), (ClaimStatus::Held, "worker-on-doomed-node"));
    let second = eventually("the abandoned claim to pass on", WAIT, || async {
        let r = claim(&cluster, survivor, "job:7", "worker-2", lease_ms, 0).await;
        (r.status() == ClaimStatus::Granted).then_some(r)
    })
    .await;
    let passed_after = granted_at.elapsed();
    assert!(passed_after >= Duration::from_millis(lease_ms) - Duration::from_millis(100), "{passed_after:?}");
    assert_ne!(second.claim_token, first.claim_token);

    let stale =
        PutRequest { key: "job:7".into(), value: b"late".to_vec(), ttl_ms: 5_000, claim_token: first.claim_token };
    let err = cluster.cache(leader).put(stale).await.expect_err("the dead holder's token");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let fill =
        PutRequest { key: "job:7".into(), value: b"done".to_vec(), ttl_ms: 5_000, claim_token: second.claim_token };
    cluster.cache(survivor).put(fill).await.expect("the new holder fills the key");
    assert_eq!(get(&cluster, leader, "job:7", ReadConsistency::Linearizable).await.value, b"done");
    println!("abandoned claim passed on {passed_after:?} after it was granted (lease {lease_ms} ms)");
}

/// 1. the sweeper runs every 2 s; 2. a value with a 300 ms TTL is read back; 3. once the TTL has
/// passed, reads find nothing even before the sweeper removed it; 4. every node's LOCAL read then
/// reports the removal at the same log index, and EVENTUAL reads find nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_expire_on_every_node_at_the_same_log_position() {
    let cluster = TestCluster::start_with(3, &["--job-interval", "2s"]).await;
    let ids = cluster.ids();
    let put = PutRequest { key: "session:abc".into(), value: b"token".to_vec(), ttl_ms: 300, ..Default::default() };
    let stored = cluster.cache(ids[1]).put(put).await.expect("put").into_inner();
    let fresh = get(&cluster, ids[2], "session:abc", ReadConsistency::Linearizable).await;
    assert!(fresh.found && fresh.expires_at_ms == stored.expires_at_ms, "{fresh:?}");
    let hidden = eventually("the value to expire for readers", WAIT, || async {
        let r = get(&cluster, ids[0], "session:abc", ReadConsistency::Linearizable).await;
        (!r.found).then_some(r)
    })
    .await;
    assert!(hidden.value.is_empty());

    let mut positions = Vec::new();
    for id in &ids {
        let r = eventually(&format!("node {id} to apply the sweep"), WAIT, || async {
            let r = get(&cluster, *id, "session:abc", ReadConsistency::Local).await;
            (r.removed_at_index != 0).then_some(r)
        })
        .await;
        assert!(!r.found && r.removed_at_index > stored.version, "node {id}: {r:?}");
        positions.push(r.removed_at_index);
        let eventual = get(&cluster, *id, "session:abc", ReadConsistency::Eventual).await;
        assert!(!eventual.found, "node {id}'s eventual view still holds the value: {eventual:?}");
    }
    assert!(positions.windows(2).all(|w| w[0] == w[1]), "removal positions differ: {positions:?}");
    println!("expired on every node at log index {}", positions[0]);
}

/// Every field at its edges: the status names the field, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cache_requests_name_the_field_and_change_nothing() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.cache(cluster.ids()[0]);
    let put = |key: &str, value: Vec<u8>, ttl_ms: u64, token: &str| PutRequest {
        key: key.into(),
        value,
        ttl_ms,
        claim_token: token.into(),
    };
    let cases: Vec<(&str, Result<(), tonic::Status>)> = vec![
        ("key", c.put(put("", b"v".to_vec(), 1_000, "")).await.map(drop)),
        ("key", c.put(put(&"k".repeat(257), b"v".to_vec(), 1_000, "")).await.map(drop)),
        ("key", c.put(put("with space", b"v".to_vec(), 1_000, "")).await.map(drop)),
        ("value", c.put(put("k", vec![7; 64 * 1024 + 1], 1_000, "")).await.map(drop)),
        ("ttl_ms", c.put(put("k", b"v".to_vec(), 0, "")).await.map(drop)),
        ("ttl_ms", c.put(put("k", b"v".to_vec(), u64::MAX, "")).await.map(drop)),
        ("claim_token", c.put(put("k", b"v".to_vec(), 1_000, &"t".repeat(65))).await.map(drop)),
        ("lease_ms", c.claim(ClaimRequest { key: "k".into(), lease_ms: 0, ..Default::default() }).await.map(drop)),
        (
            "wait_ms",
            c.claim(ClaimRequest { key: "k".into(), lease_ms: 10, wait_ms: 3_600_000, ..Default::default() })
                .await
                .map(drop),
        ),
        (
            "holder",
            c.claim(ClaimRequest { key: "k".into(), lease_ms: 10, holder: "a\nb".into(), ..Default::default() })
                .await
                .map(drop),
        ),
        ("consistency", c.get(CacheGetRequest { key: "k".into(), consistency: 99 }).await.map(drop)),
    ];
    for (field, result) in cases {
        let err = result.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field} not named in {:?}", err.message());
    }
    let r = get(&cluster, cluster.ids()[1], "k", ReadConsistency::Linearizable).await;
    assert!(!r.found, "a refused request stored something: {r:?}");
}
