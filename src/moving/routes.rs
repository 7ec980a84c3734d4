//! Makes sure the target's delivery exchange routes to an address before the
//! first message for it is published: a delayed message whose address has no
//! binding would, with at-least-once dead-lettering, stay in level 0 and jam
//! it for everyone (SPEC §1). Decided once per address per run.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use indicatif::ProgressBar;
use lapin::Connection;
use serde::Serialize;

use crate::apply::{self, OpResult, Operation};
use crate::cascade::{endpoint_binding_key, Binding, Desired, DestinationKind, Role};
use crate::moving::broker::{self, Refusal};
use crate::moving::classify::PoisonReason;
use crate::target::Target;

/// What became of an address's route in the target cascade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RouteOutcome {
    /// The delivery exchange is bound to the queue or exchange of that name
    /// (in a dry run: would be).
    Bound {
        destination: DestinationKind,
        /// Listed in the target topology's `endpoints`.
        listed: bool,
    },
    /// Nothing to bind to: its messages go to the poison queue.
    Nowhere { detail: String },
}

pub struct Routes {
    delivery_exchange: String,
    /// The target topology's endpoint bindings by address: the delivery
    /// exchange's first, then (queue-on-exchange form) exchange -> queue.
    listed: HashMap<String, Vec<Binding>>,
    decided: BTreeMap<String, RouteOutcome>,
    dry_run: bool,
}

impl Routes {
    pub fn new(target: &Desired, dry_run: bool) -> Routes {
        let mut listed: HashMap<String, Vec<Binding>> = HashMap::new();
        for binding in target.endpoint_bindings() {
            if let Role::EndpointBinding(address) | Role::EndpointQueueBinding(address) =
                &binding.role
            {
                listed
                    .entry(address.clone())
                    .or_default()
                    .push(binding.clone());
            }
        }
        Routes {
            delivery_exchange: target.delivery_exchange.clone(),
            listed,
            decided: BTreeMap::new(),
            dry_run,
        }
    }

    /// `Ok(Ok(()))` when messages for `address` can be published, `Ok(Err)`
    /// with the reason they must go to the poison queue instead.
    pub async fn ensure(
        &mut self,
        broker: &Target,
        connection: &Connection,
        address: &str,
    ) -> Result<Result<(), PoisonReason>> {
        if !self.decided.contains_key(address) {
            let outcome = self.decide(broker, connection, address).await?;
            self.decided.insert(address.to_string(), outcome);
        }
        Ok(match &self.decided[address] {
            RouteOutcome::Bound { .. } => Ok(()),
            RouteOutcome::Nowhere { detail } => Err(PoisonReason::NoDestination {
                address: address.to_string(),
                detail: detail.clone(),
            }),
        })
    }

    pub fn outcomes(&self) -> &BTreeMap<String, RouteOutcome> {
        &self.decided
    }

    /// Addresses that are a dot-suffix of another bound address: a `#.Sales`
    /// binding also matches `...Big.Sales`, so `Sales` receives both.
    pub fn overlaps(&self) -> Vec<(String, String)> {
        let bound: Vec<&String> = self
            .decided
            .iter()
            .filter(|(_, o)| matches!(o, RouteOutcome::Bound { .. }))
            .map(|(a, _)| a)
            .collect();
        let mut overlaps = Vec::new();
        for short in &bound {
            for long in &bound {
                if long.ends_with(&format!(".{short}")) {
                    overlaps.push(((*short).clone(), (*long).clone()));
                }
            }
        }
        overlaps
    }

    async fn decide(
        &self,
        broker: &Target,
        connection: &Connection,
        address: &str,
    ) -> Result<RouteOutcome> {
        let (bindings, listed) = match self.listed.get(address) {
            Some(bindings) => (bindings.clone(), true),
            None => {
                let kind = if broker::queue_exists(broker, connection, address).await? {
                    DestinationKind::Queue
                } else if broker::exchange_exists(broker, connection, address).await? {
                    DestinationKind::Exchange
                } else {
                    return Ok(RouteOutcome::Nowhere {
                        detail: format!(
                            "neither a queue nor an exchange named {address} exists in the target vhost"
                        ),
                    });
                };
                let binding = Binding {
                    source: self.delivery_exchange.clone(),
                    destination: address.to_string(),
                    destination_type: kind,
                    routing_key: endpoint_binding_key(address),
                    role: Role::EndpointBinding(address.to_string()),
                };
                (vec![binding], false)
            }
        };
        let (name, destination) = (
            bindings[0].destination.as_str(),
            bindings[0].destination_type,
        );
        let result = if self.dry_run {
            self.check(broker, connection, name, destination).await?
        } else {
            self.bind(broker, connection, bindings.clone()).await?
        };
        Ok(match result {
            Ok(()) => RouteOutcome::Bound {
                destination,
                listed,
            },
            Err(refusal) => RouteOutcome::Nowhere {
                detail: format!(
                    "cannot bind {} {name} to {}: {}",
                    destination.as_str(),
                    self.delivery_exchange,
                    refusal.text
                ),
            },
        })
    }

    /// Dry run: the destination must exist for the binding to work.
    async fn check(
        &self,
        broker: &Target,
        connection: &Connection,
        address: &str,
        destination: DestinationKind,
    ) -> Result<Result<(), Refusal>> {
        let exists = match destination {
            DestinationKind::Queue => broker::queue_exists(broker, connection, address).await?,
            DestinationKind::Exchange => {
                broker::exchange_exists(broker, connection, address).await?
            }
        };
        Ok(if exists {
            Ok(())
        } else {
            Err(Refusal {
                code: broker::NOT_FOUND,
                text: format!("{} {address} does not exist", destination.as_str()),
            })
        })
    }

    /// Binds an address's route, in order: the first refusal is the answer.
    async fn bind(
        &self,
        broker: &Target,
        connection: &Connection,
        bindings: Vec<Binding>,
    ) -> Result<Result<(), Refusal>> {
        let bind: Vec<Operation> = bindings.into_iter().map(Operation::Bind).collect();
        let results = apply::apply(connection, broker, &bind, 1, &ProgressBar::hidden()).await;
        if let Some(error) = apply::connection_failure(&bind, &results) {
            return Err(error);
        }
        let refused = results
            .into_iter()
            .find(|r| matches!(r, OpResult::Refused { .. }));
        Ok(match refused {
            Some(OpResult::Refused { code, text }) => Err(Refusal {
                code: code.unwrap_or(0),
                text,
            }),
            _ => Ok(()),
        })
    }
}
