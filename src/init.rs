//! Weight initialisation: the standard deviation of each weight matrix's normal draw.

use crate::error::{Error, Result};

/// How a layer's weights are drawn: N(0, std²) with std from the scheme and the layer's
/// fan-in (the number of inputs of each unit).
///
/// ```text
/// Std(s):  std = s                    (the book's weight_init_std = 0.01)
/// Xavier:  std = √(1 / fan_in)        for sigmoid and tanh (the book's 'sigmoid' / 'xavier')
/// He:      std = √(2 / fan_in)        for ReLU (the book's 'relu' / 'he')
/// ```
/// NOTE: Xavier here is the book's form, √(1/n_in); Glorot's paper averages fan-in and
/// fan-out, √(2/(n_in + n_out)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Std(f64),
    Xavier,
    He,
}

impl Init {
    /// The book's names: `relu`/`he`, `sigmoid`/`xavier`, or a number for a fixed standard
    /// deviation.
    pub fn parse(s: &str) -> Result<Init> {
        match s.to_ascii_lowercase().as_str() {
            "relu" | "he" => Ok(Init::He),
            "sigmoid" | "xavier" | "glorot" => Ok(Init::Xavier),
            other => match other.parse::<f64>() {
                Ok(std) if std.is_finite() && std >= 0.0 => Ok(Init::Std(std)),
                _ => Err(Error::Config(format!(
                    "--init: {s:?} is not he/relu, xavier/sigmoid or a non-negative number"
                ))),
            },
        }
    }

    /// The standard deviation for a layer with `fan_in` inputs per unit.
    pub fn std(&self, fan_in: usize) -> f64 {
        match *self {
            Init::Std(s) => s,
            Init::Xavier => (1.0 / fan_in.max(1) as f64).sqrt(),
            Init::He => (2.0 / fan_in.max(1) as f64).sqrt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_scales() {
        assert_eq!(Init::parse("relu").unwrap(), Init::He);
        assert_eq!(Init::parse("He").unwrap(), Init::He);
        assert_eq!(Init::parse("sigmoid").unwrap(), Init::Xavier);
        assert_eq!(Init::parse("xavier").unwrap(), Init::Xavier);
        assert_eq!(Init::parse("0.01").unwrap(), Init::Std(0.01));
        assert!(Init::parse("-1").is_err() && Init::parse("uniform").is_err());
        assert_eq!(Init::He.std(50), 0.2);
        assert_eq!(Init::Xavier.std(100), 0.1);
        assert_eq!(Init::Std(0.01).std(784), 0.01);
    }
}
