//! `section.key` parameter names as used on the command line.

use std::fmt;
use std::str::FromStr;

use super::ConfigError;

/// A `section.key` reference. The section is everything before the *last*
/// dot, so `node.node2.addr` is key `addr` of section `node.node2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    pub section: String,
    pub key: String,
}

impl Param {
    pub fn parse(param: &str) -> Result<Param, ConfigError> {
        let invalid = |message: &str| ConfigError::Param {
            param: param.to_string(),
            message: message.to_string(),
        };
        let trimmed = param.trim();
        let Some((section, key)) = trimmed.rsplit_once('.') else {
            return Err(invalid("expected section.key"));
        };
        let (section, key) = (section.trim(), key.trim());
        if section.is_empty() {
            return Err(invalid("empty section name"));
        }
        if key.is_empty() {
            return Err(invalid("empty key name"));
        }
        if trimmed.contains(['\n', '\r', '=', '[', ']']) {
            return Err(invalid("characters \\n, \\r, =, [ and ] are not allowed"));
        }
        Ok(Param {
            section: section.to_string(),
            key: key.to_string(),
        })
    }
}

impl FromStr for Param {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Param::parse(s)
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.section, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_last_dot() {
        let p = Param::parse("listener.port").unwrap();
        assert_eq!((p.section.as_str(), p.key.as_str()), ("listener", "port"));
        let p: Param = "node.node2.addr".parse().unwrap();
        assert_eq!((p.section.as_str(), p.key.as_str()), ("node.node2", "addr"));
        assert_eq!(p.to_string(), "node.node2.addr");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["port", "", ".port", "listener.", "a.b=c", "a.[b]", "a.b\nc"] {
            let err = Param::parse(bad).unwrap_err();
            assert!(matches!(err, ConfigError::Param { .. }), "{bad:?}");
            assert!(err.to_string().starts_with("invalid parameter"), "{err}");
        }
    }
}
