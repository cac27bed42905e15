//! Public request decoding and validation: the first byte picks a method, the rest is decoded as
//! that method's protobuf request and validated by the same functions the services call
//! (`raftlot::api::convert`). Nothing may panic; a refusal is `INVALID_ARGUMENT` naming one of the
//! request's fields; an accepted request, written back from its validated values, is accepted
//! again as the same values (normalising a plate twice changes nothing).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use raftlot::api::convert::{self, Write};
use raftlot::domain::Command;
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

fuzz_target!(|data: &[u8]| {
    let Some((&method, bytes)) = data.split_first() else { return };
    match method % 8 {
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
        _ => check(bytes, convert::get_vehicle, &["plate", "consistency"], |(plate, c)| pb::GetVehicleRequest {
            plate: plate.as_str().into(),
            consistency: convert::consistency_to_pb(*c) as i32,
        }),
    }
});
