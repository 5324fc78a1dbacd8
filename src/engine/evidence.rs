//! What the direct requests gathered before planning (`facts::direct`) add to a target's
//! context: `unit.candidates` / `unit.viable_ports` (the ports a typo'd pass target may have
//! meant, each requested directly) and `location.measured` with a `location.raise` sized from
//! the backend's measured header block. Paths documented in `playbooks/README.md`.

use super::context::{buffer_raise, buffers_for, format_size, parse_size, BUFFER_CAP};
use crate::config::UpstreamAddr;
use crate::facts::direct::{self, DirectAnswer};
use crate::facts::mapping::{Endpoint, Route};
use crate::facts::Facts;
use crate::playbook::context::{CandidateContext, MeasuredContext, RaiseContext, TargetContext};
use std::collections::BTreeSet;

/// Adds the candidates of an endpoint nothing listens on and the measured header block of a
/// backend nginx logs `too big header` for. `dialled`: every port a pass target dials.
pub fn add_direct_evidence(
    context: &mut TargetContext,
    facts: &Facts,
    dialled: &BTreeSet<u16>,
    route: &Route,
    endpoint: &Endpoint,
) {
    let path = direct::backend_path(route);
    let answer_of = |address: &str| {
        facts
            .backend_probes
            .iter()
            .find(|p| p.address == address && p.path == path)
            .map(|p| &p.answer)
    };
    if let Some(unit) = context.unit.as_mut() {
        let host = match UpstreamAddr::parse(&endpoint.address) {
            Some(UpstreamAddr::Tcp { host, .. }) => Some(host),
            _ => None,
        };
        let candidates: Vec<Candidate> = host
            .map(|host| {
                direct::candidate_ports(endpoint, dialled)
                    .into_iter()
                    .map(|port| {
                        let address = UpstreamAddr::Tcp {
                            host: host.clone(),
                            port,
                        }
                        .to_string();
                        let answer = answer_of(&address);
                        let verdict = answer
                            .map_or_else(|| Err("not requested".to_string()), DirectAnswer::viable)
                            .and(unambiguous(endpoint, port));
                        Candidate {
                            port,
                            address,
                            verdict,
                            status: answer.and_then(|a| a.status),
                            named_by: named_by(endpoint, port),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        unit.viable_ports = candidates
            .iter()
            .filter(|c| c.verdict.is_ok())
            .map(|c| c.port)
            .collect();
        unit.candidates = candidates
            .into_iter()
            .map(|c| CandidateContext {
                why: match &c.verdict {
                    Ok(()) => format!("answers {} at {path}", c.status.unwrap_or(0)),
                    Err(why) => why.clone(),
                },
                viable: c.verdict.is_ok(),
                port: c.port,
                address: c.address,
                path: path.clone(),
                status: c.status,
                named_by: c.named_by,
            })
            .collect();
    }
    let measured = (endpoint.listening && direct::plain_http(route))
        .then(|| answer_of(&endpoint.address))
        .flatten()
        .and_then(|a| Some((a.header_bytes?, a.status)));
    let Some(location) = context.location.as_mut() else {
        return;
    };
    let (size, buffers) = (location.buffer_size.clone(), location.buffers.clone());
    let busy = location.busy_buffers_size.clone();
    let rolled_back = facts
        .rolled_back_edits
        .iter()
        .find(|r| r.file == location.file)
        .map(|r| r.count);
    location.rolled_back = rolled_back;
    let Some((header_bytes, status)) = measured else {
        location.measured = None;
        if let Some(times) = rolled_back {
            let doubled = match buffer_raise(&size, &buffers, busy.as_deref()) {
                Some((size, buffers)) => Raise::To {
                    size,
                    buffers,
                    from: "doubling",
                },
                None => Raise::None,
            };
            location.raise = raise_context(step_up(doubled, times, &buffers));
        }
        return;
    };
    let raise = measured_raise(&size, &buffers, busy.as_deref(), header_bytes);
    let raise = step_up(raise, rolled_back.unwrap_or(0), &buffers);
    location.measured = Some(MeasuredContext {
        address: endpoint.address.clone(),
        path,
        status,
        header_bytes,
        above_cap: matches!(raise, Raise::AboveCap),
        overflows: overflows(&size, header_bytes),
    });
    location.raise = raise_context(raise);
}

/// Whether a header block of `header_bytes` is bigger than a `*_buffer_size` of `buffer_size`:
/// the failure nginx logs, seen at the backend itself (a reproduction of its own). A size
/// nginx-medic cannot read is not an overflow.
pub fn overflows(buffer_size: &str, header_bytes: u64) -> bool {
    parse_size(buffer_size).is_some_and(|size| header_bytes > size)
}

/// Which evidence names `port` as the one a typo'd pass target meant, in rank order: `the
/// backends: hint for shop.service, the last good configuration`.
fn named_by(endpoint: &Endpoint, port: u16) -> String {
    use crate::facts::mapping::UnitSource;
    let named: Vec<String> = endpoint
        .meant
        .iter()
        .filter(|m| m.ports.contains(&port))
        .map(|m| match m.from {
            UnitSource::UndialledHint => format!("the `backends:` hint for {}", m.unit),
            UnitSource::LastGood => format!("the last good configuration, {}", m.unit),
            UnitSource::SiteIdentity => format!("{}, named like the site", m.unit),
            UnitSource::SiteRoot => match &m.root {
                Some(r) => format!(
                    "{}, whose WorkingDirectory {} holds the site's root {}",
                    m.unit, r.working_directory, r.root
                ),
                None => format!("{}, working where the site's root is", m.unit),
            },
            _ => m.unit.clone(),
        })
        .collect();
    if named.is_empty() {
        let unit = endpoint.unit.as_deref().unwrap_or("the unit");
        format!("a port of {unit}")
    } else {
        named.join(", ")
    }
}

/// `Err` for a port that only the site's identity names while that identity matches several
/// services: which of them the site meant is not known, so none is taken (each stays listed).
/// A port that a hint or the last good configuration names as well stands on that evidence.
fn unambiguous(endpoint: &Endpoint, port: u16) -> Result<(), String> {
    use crate::facts::mapping::UnitSource;
    let identity = |m: &&crate::facts::mapping::Meant| {
        matches!(m.from, UnitSource::SiteIdentity | UnitSource::SiteRoot)
    };
    let mut matched: Vec<&str> = endpoint
        .meant
        .iter()
        .filter(identity)
        .map(|m| m.unit.as_str())
        .collect();
    matched.sort_unstable();
    matched.dedup();
    let only_identity = endpoint
        .meant
        .iter()
        .filter(|m| m.ports.contains(&port))
        .all(|m| identity(&m));
    if matched.len() > 1 && only_identity {
        Err(format!(
            "named only by the site's identity, which {} services match ({}): add a `backends:` hint for the right one",
            matched.len(),
            matched.join(", ")
        ))
    } else {
        Ok(())
    }
}

/// `location.raise`: none when nothing is raised.
fn raise_context(raise: Raise) -> Option<RaiseContext> {
    match raise {
        Raise::To {
            size,
            buffers,
            from,
        } => Some(RaiseContext {
            buffer_size: size,
            buffers,
            cap: format_size(BUFFER_CAP),
            from: Some(from),
        }),
        Raise::AboveCap | Raise::None => None,
    }
}

/// The raise after `times` raises of the same file were rolled back: doubled once per rollback,
/// so a retry steps up and never repeats; past the 64k cap, nothing. `buffers`: the current
/// `*_buffers`.
pub fn step_up(raise: Raise, times: u32, buffers: &str) -> Raise {
    let Raise::To { size, from, .. } = &raise else {
        return raise;
    };
    if times == 0 {
        return raise;
    }
    let Some(bytes) = parse_size(size) else {
        return Raise::None;
    };
    let stepped = 2u64
        .checked_pow(times)
        .and_then(|factor| bytes.checked_mul(factor));
    match stepped {
        Some(target) if target <= BUFFER_CAP => Raise::To {
            size: format_size(target),
            buffers: buffers_for(target, buffers),
            from: if *from == "measurement" {
                "measurement, stepped up after a rollback"
            } else {
                "doubling, stepped up after a rollback"
            },
        },
        _ => Raise::AboveCap,
    }
}

/// A port a typo'd pass target may have meant, and what it answered when requested directly.
struct Candidate {
    port: u16,
    address: String,
    /// `Err` says why the site may not be pointed at it.
    verdict: Result<(), String>,
    status: Option<u16>,
    /// The evidence that names it (`named_by`).
    named_by: String,
}

/// A raise of `*_buffer_size` and the `*_buffers` that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raise {
    To {
        size: String,
        buffers: String,
        /// `measurement`, or `doubling` when the measured block fits the current buffer (the
        /// header that overflows is not the one at the probe path).
        from: &'static str,
    },
    /// The measured block needs more than the 64k cap: reported, never raised.
    AboveCap,
    /// At the cap, unreadable, or `*_busy_buffers_size` set by hand.
    None,
}

/// The raise for a measured header block of `header_bytes`: the next power of two above it
/// (the block must fit with room to spare), capped at 64k.
pub fn measured_raise(
    buffer_size: &str,
    buffers: &str,
    busy: Option<&str>,
    header_bytes: u64,
) -> Raise {
    if busy.is_some() {
        return Raise::None;
    }
    let Some(current) = parse_size(buffer_size) else {
        return Raise::None;
    };
    let need = header_bytes.saturating_add(1).next_power_of_two();
    if need > BUFFER_CAP {
        return Raise::AboveCap;
    }
    if need <= current {
        return match buffer_raise(buffer_size, buffers, busy) {
            Some((size, buffers)) => Raise::To {
                size,
                buffers,
                from: "doubling",
            },
            None => Raise::None,
        };
    }
    Raise::To {
        size: format_size(need),
        buffers: buffers_for(need, buffers),
        from: "measurement",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::mapping::{Meant, RootMatch, UnitSource};

    fn endpoint(meant: Vec<Meant>) -> Endpoint {
        Endpoint {
            address: "127.0.0.1:18018".into(),
            host_name: None,
            listening: false,
            listener: None,
            pid: None,
            unit: meant.first().map(|m| m.unit.clone()),
            unit_from: meant.first().map(|m| m.from),
            unit_listeners: Vec::new(),
            meant,
        }
    }

    fn by(from: UnitSource, unit: &str, ports: &[u16]) -> Meant {
        Meant {
            from,
            unit: unit.into(),
            ports: ports.to_vec(),
            root: (from == UnitSource::SiteRoot).then(|| RootMatch {
                working_directory: "/srv/shop".into(),
                root: "/srv/shop/public".into(),
            }),
        }
    }

    #[test]
    fn a_port_only_an_identity_of_several_services_names_is_refused() {
        let one = endpoint(vec![by(
            UnitSource::SiteRoot,
            "storefront.service",
            &[18016],
        )]);
        assert_eq!(unambiguous(&one, 18016), Ok(()));
        assert_eq!(
            named_by(&one, 18016),
            "storefront.service, whose WorkingDirectory /srv/shop holds the site's root /srv/shop/public"
        );
        let two = endpoint(vec![
            by(UnitSource::SiteIdentity, "cart.service", &[18020]),
            by(UnitSource::SiteRoot, "storefront.service", &[18016]),
        ]);
        for port in [18016, 18020] {
            let refused = unambiguous(&two, port).unwrap_err();
            assert!(
                refused.contains("2 services match (cart.service, storefront.service)"),
                "{refused}"
            );
        }
        // a hint naming one of them stands on its own evidence
        let hinted = endpoint(vec![
            by(UnitSource::UndialledHint, "storefront.service", &[18016]),
            by(UnitSource::SiteIdentity, "cart.service", &[18020]),
            by(UnitSource::SiteRoot, "storefront.service", &[18016]),
        ]);
        assert_eq!(unambiguous(&hinted, 18016), Ok(()));
        assert!(unambiguous(&hinted, 18020).is_err());
    }

    fn to(size: &str, buffers: &str, from: &'static str) -> Raise {
        Raise::To {
            size: size.into(),
            buffers: buffers.into(),
            from,
        }
    }

    #[test]
    fn buffers_are_sized_to_the_next_power_of_two_above_the_measured_block() {
        // the 16.7 KB header: one raise to 32k, not 16k and a rollback
        assert_eq!(
            measured_raise("4k", "8 4k", None, 17_100),
            to("32k", "4 32k", "measurement")
        );
        assert_eq!(
            measured_raise("4k", "8 4k", None, 6_100),
            to("8k", "8 4k", "measurement"),
            "buffers that satisfy nginx's rule are kept"
        );
        assert_eq!(
            measured_raise("4k", "8 4k", None, 16_384),
            to("32k", "4 32k", "measurement"),
            "a block of exactly 16k does not fit a 16k buffer with room to spare"
        );
        assert_eq!(
            measured_raise("16k", "16 16k", None, 20_000),
            to("32k", "16 16k", "measurement")
        );
        assert_eq!(measured_raise("4k", "8 4k", None, 70_000), Raise::AboveCap);
        assert_eq!(measured_raise("4k", "8 4k", None, 65_536), Raise::AboveCap);
        assert_eq!(measured_raise("4k", "8 4k", Some("8k"), 6_000), Raise::None);
        // the measured block fits: the header that overflows is another one, step up
        assert_eq!(
            measured_raise("16k", "4 16k", None, 900),
            to("32k", "4 32k", "doubling")
        );
        assert_eq!(measured_raise("64k", "4 64k", None, 900), Raise::None);
    }

    #[test]
    fn a_block_bigger_than_the_buffer_overflows_it() {
        assert!(overflows("4k", 6_100));
        assert!(
            !overflows("4k", 4_096),
            "a block that fills the buffer fits"
        );
        assert!(!overflows("16k", 900));
        assert!(!overflows("lots", 90_000));
    }

    #[test]
    fn a_retry_after_a_rollback_steps_up_and_never_repeats() {
        let first = to("16k", "4 16k", "doubling");
        assert_eq!(step_up(first.clone(), 0, "8 4k"), first);
        assert_eq!(
            step_up(first.clone(), 1, "8 4k"),
            to("32k", "4 32k", "doubling, stepped up after a rollback")
        );
        assert_eq!(
            step_up(first.clone(), 2, "8 4k"),
            to("64k", "4 64k", "doubling, stepped up after a rollback")
        );
        assert_eq!(step_up(first, 3, "8 4k"), Raise::AboveCap, "past the cap");
        assert_eq!(step_up(Raise::None, 2, "8 4k"), Raise::None);
        assert_eq!(
            step_up(to("32k", "4 32k", "measurement"), 40, "8 4k"),
            Raise::AboveCap
        );
    }
}
