//! Public request decoding and validation: the first byte picks a method, the rest is decoded as
//! that method's protobuf request and validated by the same functions the services call
//! (`raftlot::api::convert`). Nothing may panic; a refusal is `INVALID_ARGUMENT` naming one of the
//! request's fields; an accepted request, written back from its validated values, is accepted
//! again as the same values (normalising a plate twice changes nothing).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use raftlot::api::convert::{self, Write};
use raftlot::domain::{CacheKey, Command};
use raftlot::error::Error;
use raftlot::pb::v1 as pb;

/// Checks one validation result: `again` rebuilds the request from the accepted values.
fn check<R: Message + Default, V: PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    validate: fn(R) -> Result<V, Error>,
    fields: &[&str],
    again: fn(&V) -> R,
) {
    let Ok(request) = R::decode(bytes) else { return };
    match validate(request) {
        Ok(value) => assert_eq!(validate(again(&value)).as_ref().ok(), Some(&value), "not a fixed point"),
        Err(e) => {
            let status = tonic::Status::from(e);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(
                fields.iter().any(|f| status.message().starts_with(&format!("invalid {f}: "))),
                "{status:?} names none of {fields:?}"
            );
        }
    }
}

fn request_id(w: &Write) -> String {
    w.request_id.as_ref().map_or(String::new(), |r| r.as_str().to_string())
}

/// The Add that asks for exactly this validated write again.
fn add_back(w: &Write) -> pb::AddRequest {
    let Command::Add { name, delta } = &w.command else { panic!("an add became {:?}", w.command) };
    let mode = convert::write_mode_to_pb(w.mode);
    pb::AddRequest { name: name.as_str().into(), delta: *delta, mode, request_id: request_id(w) }
}

/// The Enter with this validated write's fields; Exit has the same ones.
fn enter_back(w: &Write) -> pb::EnterRequest {
    let (Command::Enter { lot, plate, gate } | Command::Exit { lot, plate, gate }) = &w.command else {
        panic!("an entry or exit became {:?}", w.command)
    };
    let (lot, plate, gate) = (lot.as_str().into(), plate.as_str().into(), *gate);
    pb::EnterRequest { lot, plate, gate, mode: convert::write_mode_to_pb(w.mode), request_id: request_id(w) }
}

/// The Put that stores exactly this validated put again.
fn put_back(c: &Command) -> pb::PutRequest {
    let Command::CachePut { key, value, ttl_ms, token } = c else { panic!("a put became {c:?}") };
    let claim_token = token.clone().unwrap_or_default();
    pb::PutRequest { key: key.as_str().into(), value: value.clone(), ttl_ms: *ttl_ms, claim_token }
}

/// Claims as node 7 would take them (the node only names an anonymous holder).
fn claim_at_node_7(r: pb::ClaimRequest) -> Result<(CacheKey, Command, u64), Error> {
    convert::cache_claim(r, 7)
}

/// The Claim that asks for exactly this validated claim again.
fn claim_back((_, c, wait_ms): &(CacheKey, Command, u64)) -> pb::ClaimRequest {
    let Command::CacheClaim { key, lease_ms, holder } = c else { panic!("a claim became {c:?}") };
    pb::ClaimRequest { key: key.as_str().into(), lease_ms: *lease_ms, holder: holder.clone(), wait_ms: *wait_ms }
}

fuzz_target!(|data: &[u8]| {
    let Some((&method, bytes)) = data.split_first() else { return };
    match method % 12 {
        0 => check(bytes, convert::add, &["name", "mode", "request_id"], add_back),
        1 => check(bytes, convert::enter, &["lot", "plate", "mode", "request_id"], enter_back),
        2 => check(bytes, convert::exit, &["lot", "plate", "mode", "request_id"], |w| {
            let e = enter_back(w);
            pb::ExitRequest { lot: e.lot, plate: e.plate, gate: e.gate, mode: e.mode, request_id: e.request_id }
        }),
        3 => check(bytes, convert::get, &["name", "consistency"], |(name, c)| pb::GetRequest {
            name: name.as_str().into(),
            consistency: convert::consistency_to_pb(*c) as i32,
        }),
        4 => check(bytes, convert::list, &["consistency"], |c| pb::ListRequest {
            consistency: convert::consistency_to_pb(*c) as i32,
        }),
        5 => check(bytes, convert::get_lot, &["lot", "consistency"], |(lot, c)| pb::GetLotRequest {
            lot: lot.as_str().into(),
            consistency: convert::consistency_to_pb(*c) as i32,
        }),
        6 => check(bytes, convert::configure_lot, &["lot", "capacity", "gates", "max_stay_ms"], |(lot, spec)| {
            let (capacity, gates, max_stay_ms) = (spec.capacity, spec.gates, spec.max_stay_ms);
            pb::ConfigureLotRequest { lot: lot.as_str().into(), capacity, gates, max_stay_ms }
        }),
        7 => check(bytes, convert::get_vehicle, &["plate", "consistency"], |(plate, c)| pb::GetVehicleRequest {
            plate: plate.as_str().into(),
            consistency: convert::consistency_to_pb(*c) as i32,
        }),
        8 => check(bytes, convert::cache_put, &["key", "value", "ttl_ms", "claim_token"], put_back),
        9 => check(bytes, convert::cache_get, &["key", "consistency"], |(key, c)| pb::CacheGetRequest {
            key: key.as_str().into(),
            consistency: convert::consistency_to_pb(*c) as i32,
        }),
        10 => check(bytes, convert::cache_delete, &["key"], |key| pb::DeleteRequest { key: key.as_str().into() }),
        _ => check(bytes, claim_at_node_7, &["key", "lease_ms", "holder", "wait_ms"], claim_back),
    }
});
