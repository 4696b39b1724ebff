//! Fault injection: which requests misbehave, and how. A rule is a kind plus a trigger
//! (every Nth request, or a seeded rate); the first rule matching a request wins. Parsing
//! of the `--fault KIND[:ARGS][,every=N|,rate=P]` syntax lives here too.

use std::str::FromStr;
use std::time::Duration;

/// One way a request can go wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer with this HTTP status, with an OpenAI-shaped JSON error body or none
    /// (`status:503`, `status-empty:503`).
    Status {
        /// The HTTP status code.
        code: u16,
        /// Whether the response has a JSON error body.
        body: bool,
    },
    /// Abort the connection after this many content tokens (`cut:K`).
    Cut {
        /// Content tokens sent before the cut.
        after_tokens: u32,
    },
    /// Send an in-band `{"error": ...}` event after this many tokens, then `[DONE]`
    /// (`error:K`).
    ErrorEvent {
        /// Content tokens sent before the error event.
        after_tokens: u32,
    },
    /// Send nothing for a while after this many tokens (`stall:S` or `stall:S:K`).
    Stall {
        /// How long the stream stays silent (real time, not scaled by `speed`).
        duration: Duration,
        /// Content tokens sent before the stall; 0 = before the first chunk.
        after_tokens: u32,
    },
    /// Send one chunk whose data is not JSON after this many tokens, then go on
    /// (`malformed:K`).
    Malformed {
        /// Content tokens sent before the bad chunk.
        after_tokens: u32,
    },
    /// Put an SSE comment line (`: keep-alive`) before every event (`keepalive`).
    KeepAlive,
    /// Wait this long between the role chunk and the first content chunk
    /// (`first-delay:S`; real time).
    FirstDelay {
        /// The extra delay.
        duration: Duration,
    },
}

/// Which requests a rule applies to. Requests are numbered from 1 in arrival order
/// (completions and chat completions only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// Requests whose number is a multiple of N.
    Every(u64),
    /// Each request independently with this probability, drawn from the fault seed.
    Rate(f64),
}

/// A fault kind and when it happens.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// What goes wrong.
    pub kind: FaultKind,
    /// For which requests.
    pub trigger: Trigger,
}

/// A `--fault` value that cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultParseError {
    /// The kind is not one we know.
    #[error(
        "fault `{0}`: unknown kind (expected status, status-empty, cut, error, stall, malformed, keepalive, first-delay)"
    )]
    Kind(String),
    /// A number is missing or malformed.
    #[error("fault `{spec}`: {what}: expected {expected}")]
    Number {
        /// The whole fault spec.
        spec: String,
        /// Which part.
        what: &'static str,
        /// What would be valid.
        expected: &'static str,
    },
    /// The trigger part is neither `every=N` nor `rate=P`.
    #[error("fault `{0}`: trigger must be every=N (N >= 1) or rate=P (0 <= P <= 1)")]
    Trigger(String),
}

impl FromStr for FaultRule {
    type Err = FaultParseError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (kind_part, trigger_part) = match spec.split_once(',') {
            Some((k, t)) => (k, Some(t)),
            None => (spec, None),
        };
        let kind = parse_kind(spec, kind_part)?;
        let trigger = match trigger_part {
            Some(t) => parse_trigger(spec, t)?,
            None => Trigger::Every(1),
        };
        Ok(FaultRule { kind, trigger })
    }
}

/// Parses `KIND[:ARG[:ARG]]`.
fn parse_kind(spec: &str, part: &str) -> Result<FaultKind, FaultParseError> {
    let mut fields = part.split(':');
    let name = fields.next().unwrap_or_default();
    let args: Vec<&str> = fields.collect();
    let num = |i: usize, what: &'static str| -> Result<u32, FaultParseError> {
        let bad = || FaultParseError::Number {
            spec: spec.to_owned(),
            what,
            expected: "a whole number",
        };
        args.get(i).ok_or_else(bad)?.parse().map_err(|_| bad())
    };
    let secs = |i: usize| -> Result<Duration, FaultParseError> {
        let bad = || FaultParseError::Number {
            spec: spec.to_owned(),
            what: "seconds",
            expected: "a non-negative number of seconds",
        };
        let s: f64 = args.get(i).ok_or_else(bad)?.parse().map_err(|_| bad())?;
        Duration::try_from_secs_f64(s).map_err(|_| bad())
    };
    match name {
        "status" | "status-empty" => {
            let code = num(0, "status code")?;
            if !(400..=599).contains(&code) {
                return Err(FaultParseError::Number {
                    spec: spec.to_owned(),
                    what: "status code",
                    expected: "an HTTP error status from 400 to 599",
                });
            }
            Ok(FaultKind::Status {
                code: code as u16,
                body: name == "status",
            })
        }
        "cut" => Ok(FaultKind::Cut {
            after_tokens: num(0, "tokens")?,
        }),
        "error" => Ok(FaultKind::ErrorEvent {
            after_tokens: num(0, "tokens")?,
        }),
        "malformed" => Ok(FaultKind::Malformed {
            after_tokens: num(0, "tokens")?,
        }),
        "stall" => {
            let after_tokens = if args.len() > 1 { num(1, "tokens")? } else { 0 };
            Ok(FaultKind::Stall {
                duration: secs(0)?,
                after_tokens,
            })
        }
        "keepalive" => Ok(FaultKind::KeepAlive),
        "first-delay" => Ok(FaultKind::FirstDelay { duration: secs(0)? }),
        _ => Err(FaultParseError::Kind(spec.to_owned())),
    }
}

/// Parses `every=N` or `rate=P`.
fn parse_trigger(spec: &str, part: &str) -> Result<Trigger, FaultParseError> {
    let bad = || FaultParseError::Trigger(spec.to_owned());
    match part.split_once('=') {
        Some(("every", n)) => match n.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Trigger::Every(n)),
            _ => Err(bad()),
        },
        Some(("rate", p)) => match p.parse::<f64>() {
            Ok(p) if (0.0..=1.0).contains(&p) => Ok(Trigger::Rate(p)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// The fault for request number `n` (from 1), if any: the first rule that matches.
/// Deterministic in (`seed`, `n`), whatever order requests run in.
pub fn pick(rules: &[FaultRule], seed: u64, n: u64) -> Option<&FaultKind> {
    rules.iter().enumerate().find_map(|(i, rule)| {
        let hit = match rule.trigger {
            Trigger::Every(every) => n % every == 0,
            Trigger::Rate(p) => unit_draw(seed, n, i as u64) < p,
        };
        hit.then_some(&rule.kind)
    })
}

/// A uniform draw in [0, 1) from (seed, request, rule) with SplitMix64.
fn unit_draw(seed: u64, n: u64, rule: u64) -> f64 {
    let mut z =
        seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ rule.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_trigger() {
        let rule: FaultRule = "status-empty:503,every=4".parse().unwrap();
        assert_eq!(
            rule.kind,
            FaultKind::Status {
                code: 503,
                body: false
            }
        );
        assert_eq!(rule.trigger, Trigger::Every(4));
        let rule: FaultRule = "stall:1.5:3,rate=0.25".parse().unwrap();
        assert_eq!(
            rule.kind,
            FaultKind::Stall {
                duration: Duration::from_millis(1500),
                after_tokens: 3
            }
        );
        assert_eq!(rule.trigger, Trigger::Rate(0.25));
        assert_eq!(
            "keepalive".parse::<FaultRule>().unwrap().trigger,
            Trigger::Every(1)
        );
    }

    #[test]
    fn rejects_bad_specs_naming_them() {
        let err = "boom:3".parse::<FaultRule>().unwrap_err();
        assert!(err.to_string().contains("boom:3"));
        assert!("cut".parse::<FaultRule>().is_err());
        assert!("status:200".parse::<FaultRule>().is_err());
        assert!("cut:3,every=0".parse::<FaultRule>().is_err());
        assert!("cut:3,rate=1.5".parse::<FaultRule>().is_err());
        assert!("stall:-1".parse::<FaultRule>().is_err());
    }

    #[test]
    fn every_nth_and_rate_pick_the_expected_share() {
        let rules: Vec<FaultRule> = vec!["cut:1,every=3".parse().unwrap()];
        let hits: Vec<u64> = (1..=9).filter(|n| pick(&rules, 0, *n).is_some()).collect();
        assert_eq!(hits, vec![3, 6, 9]);

        let rules: Vec<FaultRule> = vec!["cut:1,rate=0.2".parse().unwrap()];
        let count = (1..=10_000)
            .filter(|n| pick(&rules, 7, *n).is_some())
            .count();
        assert!((1_800..2_200).contains(&count), "{count}");
    }
}
