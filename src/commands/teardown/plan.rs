//! What teardown touches in one vhost, and what it needs to put back, decided
//! from the desired cascade and the management API's observation. Pure.

use std::collections::BTreeSet;

use crate::cascade::{level_ttl_ms, Arguments, Binding, Desired, DestinationKind, Exchange, Role};
use crate::observe::{Observed, ObservedBinding, ObservedQueue};
use crate::topology::ArgValue;

use crate::apply::Operation;

/// One level queue that exists on the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelQueue {
    pub level: u8,
    pub name: String,
    /// Expiring messages survive a missing next hop (they wait in the
    /// dead-letter backlog); otherwise they are dropped.
    pub at_least_once: bool,
    /// How long a message waits here at most: the argument, or a lower policy value.
    pub ttl_ms: i64,
    /// Where its expiring messages go next.
    pub dead_letter_exchange: Option<String>,
}

/// The cascade as it stands in one vhost, and the bindings that removing it removes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Cascade exchanges present, upstream first (level N-1 down to 0, then
    /// delivery): deleted in this order, no remaining exchange ever routes
    /// into a deleted one. Properties as observed, to restore them exactly.
    pub exchanges: Vec<Exchange>,
    /// Level queues present, highest level first.
    pub queues: Vec<LevelQueue>,
    /// Every binding with a cascade exchange at either end: what deleting
    /// the exchanges removes, and what a restore must put back.
    pub recorded: Vec<ObservedBinding>,
    /// Bindings from other exchanges straight into a level queue: inflow that
    /// deleting the cascade's exchanges does not stop, so they are unbound too.
    pub foreign_inflow: Vec<ObservedBinding>,
}

impl Plan {
    /// From an observation: only what exists is touched.
    pub fn observed(desired: &Desired, observed: &Observed) -> Plan {
        let exchanges: Vec<Exchange> = desired
            .exchanges
            .iter()
            .filter_map(|wanted| {
                observed.exchanges.get(&wanted.name).map(|found| Exchange {
                    name: found.name.clone(),
                    kind: found.kind.clone(),
                    durable: found.durable,
                    auto_delete: found.auto_delete,
                    internal: found.internal,
                    arguments: found.arguments.clone(),
                    role: wanted.role.clone(),
                })
            })
            .collect();
        let queues = desired
            .queues
            .iter()
            .filter_map(|wanted| {
                observed
                    .queues
                    .get(&wanted.name)
                    .map(|found| level_queue(wanted.level, found))
            })
            .collect::<Vec<_>>();
        let cascade_exchange = |name: &str| exchanges.iter().any(|e| e.name == name);
        let level_queue_named = |name: &str| queues.iter().any(|q| q.name == name);
        let mut recorded = Vec::new();
        let mut foreign_inflow = Vec::new();
        for b in &observed.bindings {
            let into_cascade_exchange =
                b.destination_type == DestinationKind::Exchange && cascade_exchange(&b.destination);
            if cascade_exchange(&b.source) || into_cascade_exchange {
                recorded.push(b.clone());
            } else if b.destination_type == DestinationKind::Queue
                && level_queue_named(&b.destination)
            {
                foreign_inflow.push(b.clone());
            }
        }
        Plan {
            exchanges,
            queues,
            recorded,
            foreign_inflow,
        }
    }

    /// Without the management API (`--force` only): every name of the
    /// cascade as the topology describes it, and only its own bindings.
    pub fn assumed(desired: &Desired) -> Plan {
        Plan {
            exchanges: desired.exchanges.clone(),
            queues: desired
                .queues
                .iter()
                .map(|q| LevelQueue {
                    level: q.level,
                    name: q.name.clone(),
                    at_least_once: false,
                    ttl_ms: level_ttl_ms(q.level),
                    dead_letter_exchange: match q.arguments.get("x-dead-letter-exchange") {
                        Some(ArgValue::Str(name)) => Some(name.clone()),
                        _ => None,
                    },
                })
                .collect(),
            recorded: desired
                .bindings
                .iter()
                .map(|b| ObservedBinding {
                    source: b.source.clone(),
                    destination: b.destination.clone(),
                    destination_type: b.destination_type,
                    routing_key: b.routing_key.clone(),
                    arguments: Arguments::new(),
                })
                .collect(),
            foreign_inflow: Vec::new(),
        }
    }

    /// Keeps only the exchanges and queues found (by AMQP, without the
    /// management API), and the bindings of the exchanges kept.
    pub fn retain_present(&mut self, exchange_found: &[bool], queue_found: &[bool]) {
        let mut found = exchange_found.iter();
        self.exchanges.retain(|_| *found.next().unwrap_or(&false));
        let mut found = queue_found.iter();
        self.queues.retain(|_| *found.next().unwrap_or(&false));
        let exchanges = &self.exchanges;
        self.recorded
            .retain(|b| exchanges.iter().any(|e| e.name == b.source));
    }

    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty() && self.queues.is_empty() && self.foreign_inflow.is_empty()
    }

    /// The exchanges deleted to stop the inflow: the level exchanges. The
    /// delivery exchange is no way in, so it goes last, after the queues:
    /// until then level 0 keeps delivering what expires.
    fn entry_exchanges(&self) -> impl DoubleEndedIterator<Item = &Exchange> {
        self.exchanges
            .iter()
            .filter(|e| e.role != Role::DeliveryExchange)
    }

    fn is_entry_exchange(&self, name: &str) -> bool {
        self.entry_exchanges().any(|e| e.name == name)
    }

    /// A binding that deleting the level exchanges removes.
    fn touches_entry_exchange(&self, b: &ObservedBinding) -> bool {
        self.is_entry_exchange(&b.source)
            || (b.destination_type == DestinationKind::Exchange
                && self.is_entry_exchange(&b.destination))
    }

    /// The delivery exchange, if present: deleted with the queues.
    pub fn delivery_exchange(&self) -> Option<&Exchange> {
        self.exchanges
            .iter()
            .find(|e| e.role == Role::DeliveryExchange)
    }

    /// The shortest time a message can wait in a level queue whose next hop
    /// the stop deletes: once that hop is gone, an expiring message moves
    /// into the queue's dead-letter backlog, out of sight of AMQP.
    pub fn shortest_ttl_ms(&self) -> i64 {
        self.queues
            .iter()
            .filter(|q| {
                q.dead_letter_exchange
                    .as_deref()
                    .is_some_and(|next| self.is_entry_exchange(next))
            })
            .map(|q| q.ttl_ms)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Bindings whose source is a cascade exchange: what `--unbind-only` removes.
    pub fn outgoing(&self) -> Vec<&ObservedBinding> {
        let mut outgoing: Vec<&ObservedBinding> = self
            .recorded
            .iter()
            .filter(|b| self.position(&b.source).is_some())
            .collect();
        outgoing.sort_by_key(|b| self.position(&b.source));
        outgoing
    }

    /// Stops every inflow into the level queues: deletes the level exchanges
    /// upstream first, then unbinds foreign exchanges from level queues.
    pub fn stop_inflow(&self) -> Vec<Operation> {
        let deletes = self
            .entry_exchanges()
            .map(|e| Operation::DeleteExchange(e.name.clone()));
        let unbinds = self
            .foreign_inflow
            .iter()
            .filter(|b| b.arguments.is_empty())
            .map(|b| Operation::Unbind(binding(b)));
        deletes.chain(unbinds).collect()
    }

    /// Puts back what `stop_inflow` removed, downstream first, so that every
    /// exchange is complete before anything upstream routes into it. Bindings
    /// with arguments are not expressible here: `restore_by_api` returns them.
    pub fn restore_after_stop(&self) -> Vec<Operation> {
        let mut ops = Vec::new();
        let mut declared: BTreeSet<&str> = BTreeSet::new();
        let mut pending: Vec<&ObservedBinding> = self.removed_by_stop().collect();
        let still_missing = |name: &str, declared: &BTreeSet<&str>| {
            self.is_entry_exchange(name) && !declared.contains(name)
        };
        for exchange in self.entry_exchanges().rev() {
            ops.push(Operation::DeclareExchange(exchange.clone()));
            declared.insert(&exchange.name);
            pending.retain(|b| {
                let waiting = still_missing(&b.source, &declared)
                    || (b.destination_type == DestinationKind::Exchange
                        && still_missing(&b.destination, &declared));
                if !waiting {
                    ops.push(Operation::Bind(binding(b)));
                }
                waiting
            });
        }
        ops.extend(pending.into_iter().map(|b| Operation::Bind(binding(b))));
        ops
    }

    /// Bindings without arguments that the stop removes: every binding of a
    /// level exchange, and the foreign ones into level queues.
    fn removed_by_stop(&self) -> impl Iterator<Item = &ObservedBinding> {
        self.recorded
            .iter()
            .filter(|b| self.touches_entry_exchange(b))
            .chain(&self.foreign_inflow)
            .filter(|b| b.arguments.is_empty())
    }

    /// What the stop removes that `observed` lacks: (missing, of) level
    /// exchanges and bindings.
    pub fn missing_after_stop(&self, observed: &Observed) -> StopGap {
        let exchanges: Vec<&Exchange> = self.entry_exchanges().collect();
        let bindings: Vec<&ObservedBinding> = self
            .recorded
            .iter()
            .filter(|b| self.touches_entry_exchange(b))
            .chain(&self.foreign_inflow)
            .collect();
        StopGap {
            exchanges: (
                exchanges
                    .iter()
                    .filter(|e| !observed.exchanges.contains_key(&e.name))
                    .count(),
                exchanges.len(),
            ),
            bindings: (
                bindings
                    .iter()
                    .filter(|b| !observed.bindings.contains(b))
                    .count(),
                bindings.len(),
            ),
        }
    }

    /// Bindings with arguments that the stop removes: restored through the
    /// management API.
    pub fn restore_by_api(&self) -> Vec<&ObservedBinding> {
        self.recorded
            .iter()
            .filter(|b| self.touches_entry_exchange(b))
            .filter(|b| !b.arguments.is_empty())
            .collect()
    }

    fn position(&self, exchange: &str) -> Option<usize> {
        self.exchanges.iter().position(|e| e.name == exchange)
    }
}

/// What is missing of what the stop phase removed: (missing, of).
#[derive(Debug, PartialEq, Eq)]
pub struct StopGap {
    pub exchanges: (usize, usize),
    pub bindings: (usize, usize),
}

/// An observed binding as an operation's binding; the role is only a label.
pub fn binding(b: &ObservedBinding) -> Binding {
    Binding {
        source: b.source.clone(),
        destination: b.destination.clone(),
        destination_type: b.destination_type,
        routing_key: b.routing_key.clone(),
        role: Role::EndpointBinding(b.destination.clone()),
    }
}

fn level_queue(level: u8, found: &ObservedQueue) -> LevelQueue {
    let policy = |key: &str| {
        found
            .effective_policy_definition
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
            .map(crate::observe::arg_value)
    };
    let argument = |key: &str| found.arguments.get(key).cloned();
    let is = |value: Option<ArgValue>, wanted: &str| value == Some(ArgValue::Str(wanted.into()));
    let quorum = found.queue_type == "quorum" || is(argument("x-queue-type"), "quorum");
    let strategy = argument("x-dead-letter-strategy").or_else(|| policy("dead-letter-strategy"));
    // On quorum queues a policy's `overflow` beats the argument (SPEC §1).
    let overflow = policy("overflow").or_else(|| argument("x-overflow"));
    let at_least_once =
        quorum && is(strategy, "at-least-once") && is(overflow.clone(), "reject-publish");
    let ttl = |value: Option<ArgValue>| match value {
        Some(ArgValue::Int(ms)) => Some(ms),
        _ => None,
    };
    let ttl_ms = [ttl(argument("x-message-ttl")), ttl(policy("message-ttl"))]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| level_ttl_ms(level));
    let dead_letter_exchange =
        match argument("x-dead-letter-exchange").or_else(|| policy("dead-letter-exchange")) {
            Some(ArgValue::Str(name)) => Some(name),
            _ => None,
        };
    LevelQueue {
        level,
        name: found.name.clone(),
        at_least_once,
        ttl_ms,
        dead_letter_exchange,
    }
}

/// What one level queue holds, from both sources: the AMQP count of ready
/// messages now, and the management API's (lagging) statistics, which also
/// see the dead-letter backlog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holding {
    pub ready_now: u64,
    pub statistics_messages: u64,
    pub dead_letter_backlog: u64,
}

impl Holding {
    pub fn from_statistics(queue: Option<&ObservedQueue>) -> Holding {
        Holding {
            ready_now: 0,
            statistics_messages: queue
                .map(|q| {
                    q.messages
                        .unwrap_or(0)
                        .max(q.messages_ready.unwrap_or(0) + q.messages_unacknowledged.unwrap_or(0))
                })
                .unwrap_or(0),
            dead_letter_backlog: queue.and_then(|q| q.messages_dlx).unwrap_or(0),
        }
    }

    /// The best estimate of what the queue holds. The statistics' `messages`
    /// sometimes include the dead-letter backlog and sometimes not yet, so
    /// the two are not added.
    pub fn total(&self) -> u64 {
        (self.ready_now + self.dead_letter_backlog).max(self.statistics_messages)
    }

    /// Keeps the larger of each count (two looks at the same queue).
    pub fn merge(&mut self, other: &Holding) {
        self.ready_now = self.ready_now.max(other.ready_now);
        self.statistics_messages = self.statistics_messages.max(other.statistics_messages);
        self.dead_letter_backlog = self.dead_letter_backlog.max(other.dead_letter_backlog);
    }
}

#[cfg(test)]
mod tests;
