//! Parsing goodput objectives in vLLM's form: `--goodput ttft:500 tpot:50 e2el:10000`, each
//! `NAME:MILLISECONDS`, any subset, later terms overriding earlier ones.

use std::str::FromStr;

use super::GoodputSlo;

/// A goodput term that is not `ttft|tpot|e2el:MILLISECONDS`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GoodputError {
    /// No `:` between name and value.
    #[error("goodput term {0:?}: expected NAME:MILLISECONDS, e.g. ttft:500")]
    Shape(String),
    /// The name is not one of `ttft`, `tpot`, `e2el`.
    #[error("goodput term {0:?}: unknown metric (expected ttft, tpot or e2el)")]
    Metric(String),
    /// The value is not a positive finite number.
    #[error("goodput term {0:?}: value must be a positive number of milliseconds")]
    Value(String),
}

/// The metric a goodput term constrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoodputMetric {
    /// Time to first token.
    Ttft,
    /// Time per output token.
    Tpot,
    /// End-to-end latency.
    E2el,
}

/// One `NAME:MILLISECONDS` term.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GoodputTerm {
    /// What it constrains.
    pub metric: GoodputMetric,
    /// The objective, ms.
    pub limit_ms: f64,
}

/// Parses one term; usable as a clap `value_parser` for `--goodput` with `num_args = 1..`.
pub fn parse_goodput_term(text: &str) -> Result<GoodputTerm, GoodputError> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| GoodputError::Shape(text.to_string()))?;
    let metric = match name.trim().to_ascii_lowercase().as_str() {
        "ttft" => GoodputMetric::Ttft,
        "tpot" => GoodputMetric::Tpot,
        "e2el" => GoodputMetric::E2el,
        _ => return Err(GoodputError::Metric(text.to_string())),
    };
    let limit_ms: f64 = value
        .trim()
        .parse()
        .map_err(|_| GoodputError::Value(text.to_string()))?;
    if !(limit_ms.is_finite() && limit_ms > 0.0) {
        return Err(GoodputError::Value(text.to_string()));
    }
    Ok(GoodputTerm { metric, limit_ms })
}

impl GoodputSlo {
    /// The objectives given by `terms` (a later term for the same metric wins).
    pub fn from_terms(terms: &[GoodputTerm]) -> Self {
        let mut slo = GoodputSlo::default();
        for term in terms {
            let slot = match term.metric {
                GoodputMetric::Ttft => &mut slo.ttft_ms,
                GoodputMetric::Tpot => &mut slo.tpot_ms,
                GoodputMetric::E2el => &mut slo.e2el_ms,
            };
            *slot = Some(term.limit_ms);
        }
        slo
    }

    /// Whether no objective is set.
    pub fn is_empty(&self) -> bool {
        self.ttft_ms.is_none() && self.tpot_ms.is_none() && self.e2el_ms.is_none()
    }
}

impl FromStr for GoodputSlo {
    type Err = GoodputError;

    /// Parses terms separated by spaces or commas: `"ttft:500 tpot:50"`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let terms = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(parse_goodput_term)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GoodputSlo::from_terms(&terms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vllm_form() {
        let slo: GoodputSlo = "ttft:500 tpot:50, e2el:10000".parse().expect("valid terms");
        assert_eq!(slo.ttft_ms, Some(500.0));
        assert_eq!(slo.tpot_ms, Some(50.0));
        assert_eq!(slo.e2el_ms, Some(10000.0));
        let only: GoodputSlo = "TPOT:12.5".parse().expect("valid term");
        assert_eq!((only.ttft_ms, only.tpot_ms), (None, Some(12.5)));
    }

    #[test]
    fn rejects_bad_terms_naming_them() {
        assert_eq!(
            parse_goodput_term("ttft500"),
            Err(GoodputError::Shape("ttft500".into()))
        );
        assert_eq!(
            parse_goodput_term("itl:5"),
            Err(GoodputError::Metric("itl:5".into()))
        );
        assert_eq!(
            parse_goodput_term("ttft:-1"),
            Err(GoodputError::Value("ttft:-1".into()))
        );
        assert_eq!(
            parse_goodput_term("ttft:inf"),
            Err(GoodputError::Value("ttft:inf".into()))
        );
        let err = parse_goodput_term("e2el:x")
            .expect_err("not a number")
            .to_string();
        assert!(err.contains("\"e2el:x\""), "{err}");
    }
}
