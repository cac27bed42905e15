//! `raftlot.v1.Parking`: lots, gates and plates, strong or eventual as each request asks.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::domain::{Command, Query, QueryReply, Reply};
use crate::error::Error;
use crate::node::Node;
use crate::pb::v1 as pb;
use crate::pb::v1::parking_server::Parking;

pub struct ParkingService {
    pub node: Arc<Node>,
}

fn unexpected(what: &str, reply: impl std::fmt::Debug) -> Status {
    Error::internal(format!("{what} was answered with {reply:?}")).into()
}

#[tonic::async_trait]
impl Parking for ParkingService {
    async fn enter(&self, request: Request<pb::EnterRequest>) -> Result<Response<pb::EnterReply>, Status> {
        let convert::Write { mode, command, request_id } = convert::enter(request.into_inner())?;
        let applied = self.node.write_in(mode, command, request_id).await?;
        match applied.outcome.map_err(Error::from)? {
            Reply::Entered { lot, plate, gate, occupied, capacity, entered_at_ms } => {
                Ok(Response::new(pb::EnterReply {
                    lot,
                    plate,
                    gate,
                    occupied,
                    capacity,
                    entered_at_ms,
                    log_index: applied.index,
                    deduplicated: applied.deduplicated,
                    mode: convert::write_mode_to_pb(mode),
                    served_by: self.node.id,
                }))
            }
            other => Err(unexpected("an entry", other)),
        }
    }

    async fn exit(&self, request: Request<pb::ExitRequest>) -> Result<Response<pb::ExitReply>, Status> {
        let convert::Write { mode, command, request_id } = convert::exit(request.into_inner())?;
        let applied = self.node.write_in(mode, command, request_id).await?;
        match applied.outcome.map_err(Error::from)? {
            Reply::Exited { lot, plate, gate, occupied, capacity, parked_ms } => Ok(Response::new(pb::ExitReply {
                lot,
                plate,
                gate,
                occupied,
                capacity,
                parked_ms,
                log_index: applied.index,
                deduplicated: applied.deduplicated,
                mode: convert::write_mode_to_pb(mode),
                served_by: self.node.id,
            })),
            other => Err(unexpected("an exit", other)),
        }
    }

    async fn get_lot(&self, request: Request<pb::GetLotRequest>) -> Result<Response<pb::GetLotReply>, Status> {
        let (name, consistency) = convert::get_lot(request.into_inner())?;
        let result = self.node.read(Query::Lot(name.clone()), consistency).await?;
        let lot = match result.reply {
            QueryReply::Lot(Some(lot)) => lot,
            QueryReply::Lot(None) => return Err(Status::not_found(format!("lot {} does not exist", name.as_str()))),
            other => return Err(unexpected("a lot read", other)),
        };
        let occupied = lot.vehicles.len() as u32;
        Ok(Response::new(pb::GetLotReply {
            lot: name.as_str().to_string(),
            capacity: lot.spec.capacity,
            gates: lot.spec.gates,
            occupied,
            free: lot.spec.capacity.saturating_sub(occupied),
            vehicles: lot
                .vehicles
                .iter()
                .map(|(plate, v)| pb::ParkedVehicle {
                    plate: plate.as_str().to_string(),
                    gate: v.gate,
                    entered_at_ms: v.entered_at_ms,
                })
                .collect(),
            gate_stats: lot
                .gate_counts
                .iter()
                .enumerate()
                .map(|(i, c)| pb::GateStats { gate: i as u32 + 1, entries: c.entries, exits: c.exits })
                .collect(),
            meta: Some(result.meta.into()),
            over_capacity: lot.over_capacity,
            duplicates: lot.duplicates.iter().map(|p| p.as_str().to_string()).collect(),
            max_stay_ms: lot.spec.max_stay_ms,
            tows: lot
                .tows
                .iter()
                .map(|t| pb::TowRecord {
                    plate: t.plate.as_str().to_string(),
                    entered_at_ms: t.entered_at_ms,
                    towed_at_ms: t.towed_at_ms,
                    log_index: t.index,
                    term: t.term,
                })
                .collect(),
        }))
    }

    async fn configure_lot(
        &self,
        request: Request<pb::ConfigureLotRequest>,
    ) -> Result<Response<pb::ConfigureLotReply>, Status> {
        let (lot, spec) = convert::configure_lot(request.into_inner())?;
        let applied = self.node.write(Command::ConfigureLot { lot, spec }, None).await?;
        match applied.outcome.map_err(Error::from)? {
            Reply::LotConfigured { lot, spec, created } => Ok(Response::new(pb::ConfigureLotReply {
                lot,
                capacity: spec.capacity,
                gates: spec.gates,
                created,
                log_index: applied.index,
                max_stay_ms: spec.max_stay_ms,
            })),
            other => Err(unexpected("a lot configuration", other)),
        }
    }

    async fn get_vehicle(
        &self,
        request: Request<pb::GetVehicleRequest>,
    ) -> Result<Response<pb::GetVehicleReply>, Status> {
        let (plate, consistency) = convert::get_vehicle(request.into_inner())?;
        let result = self.node.read(Query::Vehicle(plate.clone()), consistency).await?;
        let meta = Some(result.meta.into());
        let plate = plate.as_str().to_string();
        match result.reply {
            QueryReply::Vehicle(Some((lot, v))) => Ok(Response::new(pb::GetVehicleReply {
                plate,
                inside: true,
                lot,
                gate: v.gate,
                entered_at_ms: v.entered_at_ms,
                meta,
            })),
            QueryReply::Vehicle(None) => Ok(Response::new(pb::GetVehicleReply { plate, meta, ..Default::default() })),
            other => Err(unexpected("a vehicle read", other)),
        }
    }
}
