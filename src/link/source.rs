/*!
Where a meter's bytes come from: `--port N=SOURCE` on the command line, `[ports]` in the config file.

`/dev/ttyUSB0` (any other text) is a serial device, `tcp://host:port` a serial bridge (ser2net,
ESP-Link), `file:PATH` a recorded capture replayed at the line's byte rate, `can:IFACE` a SocketCAN
interface (`C` meters), `gpio:CHIP:LINE` a GPIO line of a character device (`c` counters;
`gpio:gpiochip0:17` or `gpio:/dev/gpiochip0:17`).
*/

use crate::script::model::MeterIndex;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Serial(PathBuf),
    Tcp {
        host: String,
        port: u16,
    },
    Replay(PathBuf),
    /// A SocketCAN interface (`can0`, `vcan0`).
    Can(String),
    /// A line (offset) of a GPIO character device.
    Gpio {
        chip: PathBuf,
        line: u32,
    },
}

/// A meter index bound to a source: `1=/dev/ttyUSB0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub meter: MeterIndex,
    pub source: Source,
}

/// How fast a capture is replayed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ReplaySpeed {
    /// At the line's byte rate times this factor (1 = as the meter sent it).
    #[default]
    RealTime,
    Factor(f64),
    /// As fast as the decoder takes it.
    Max,
}

/// Replay factors accepted: slower than 1/1000 never ends in practice, faster than a million times
/// is what `max` is for; outside, the replay's timing arithmetic leaves the clock's range.
pub const MIN_FACTOR: f64 = 0.001;
pub const MAX_FACTOR: f64 = 1_000_000.0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error(
        "'{0}': expected N=SOURCE, e.g. 1=/dev/ttyUSB0, 1=tcp://host:2000 or 1=file:capture.txt"
    )]
    NoIndex(String),
    #[error("'{0}': the meter index must be a number from 1 to 255")]
    BadIndex(String),
    #[error("'{0}': expected tcp://host:port")]
    BadTcp(String),
    #[error("'{0}': expected can:INTERFACE, e.g. can:can0")]
    BadCan(String),
    #[error("'{0}': expected gpio:CHIP:LINE, e.g. gpio:gpiochip0:17 or gpio:/dev/gpiochip0:17")]
    BadGpio(String),
    #[error("'{0}': no path given")]
    Empty(String),
    #[error(
        "'{0}': expected 'max' or a speed factor from {MIN_FACTOR} to {MAX_FACTOR} such as 1 (as the \
         meter sent it) or 10"
    )]
    BadSpeed(String),
}

impl FromStr for Source {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| SourceError::BadTcp(s.into()))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port: u16 = port
                .trim_end_matches('/')
                .parse()
                .map_err(|_| SourceError::BadTcp(s.into()))?;
            if host.is_empty() || port == 0 {
                return Err(SourceError::BadTcp(s.into()));
            }
            return Ok(Source::Tcp {
                host: host.to_string(),
                port,
            });
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(SourceError::Empty(s.into()));
            }
            return Ok(Source::Replay(PathBuf::from(path)));
        }
        if let Some(interface) = s.strip_prefix("can:") {
            if interface.is_empty() || interface.contains(['/', ' ']) {
                return Err(SourceError::BadCan(s.into()));
            }
            return Ok(Source::Can(interface.to_string()));
        }
        if let Some(rest) = s.strip_prefix("gpio:") {
            let (chip, line) = rest
                .rsplit_once(':')
                .ok_or_else(|| SourceError::BadGpio(s.into()))?;
            let line: u32 = line.parse().map_err(|_| SourceError::BadGpio(s.into()))?;
            if chip.is_empty() {
                return Err(SourceError::BadGpio(s.into()));
            }
            return Ok(Source::Gpio {
                chip: super::gpio::chip_path(chip),
                line,
            });
        }
        let path = s.strip_prefix("serial:").unwrap_or(s);
        if path.is_empty() {
            return Err(SourceError::Empty(s.into()));
        }
        Ok(Source::Serial(PathBuf::from(path)))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Serial(p) => write!(f, "{}", p.display()),
            Source::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Source::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Source::Replay(p) => write!(f, "file:{}", p.display()),
            Source::Can(interface) => write!(f, "can:{interface}"),
            Source::Gpio { chip, line } => write!(f, "gpio:{}:{line}", chip.display()),
        }
    }
}

impl fmt::Display for Binding {
    /// As the user writes it after `--port`: `1=/dev/ttyUSB0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.meter, self.source)
    }
}

impl FromStr for Binding {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (index, source) = s
            .split_once('=')
            .ok_or_else(|| SourceError::NoIndex(s.into()))?;
        let meter: MeterIndex = index
            .trim()
            .parse()
            .map_err(|_| SourceError::BadIndex(s.into()))?;
        if meter == 0 {
            return Err(SourceError::BadIndex(s.into()));
        }
        Ok(Binding {
            meter,
            source: source.trim().parse()?,
        })
    }
}

impl FromStr for ReplaySpeed {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(ReplaySpeed::Max);
        }
        match s.trim_end_matches('x').parse::<f64>() {
            Ok(f) if (MIN_FACTOR..=MAX_FACTOR).contains(&f) => Ok(if f == 1.0 {
                ReplaySpeed::RealTime
            } else {
                ReplaySpeed::Factor(f)
            }),
            _ => Err(SourceError::BadSpeed(s.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_name_the_three_kinds_of_source() {
        assert_eq!(
            "1=/dev/ttyUSB0".parse::<Binding>().unwrap(),
            Binding {
                meter: 1,
                source: Source::Serial("/dev/ttyUSB0".into())
            }
        );
        assert_eq!(
            "2=tcp://192.168.1.5:2000"
                .parse::<Binding>()
                .unwrap()
                .source,
            Source::Tcp {
                host: "192.168.1.5".into(),
                port: 2000
            }
        );
        assert_eq!(
            "3=tcp://[::1]:23".parse::<Binding>().unwrap().source,
            Source::Tcp {
                host: "::1".into(),
                port: 23
            }
        );
        assert_eq!(
            "1=file:cap.txt".parse::<Binding>().unwrap().source,
            Source::Replay("cap.txt".into())
        );
    }

    #[test]
    fn malformed_bindings_say_what_is_expected() {
        assert!(matches!(
            "/dev/ttyUSB0".parse::<Binding>(),
            Err(SourceError::NoIndex(_))
        ));
        assert!(matches!(
            "0=/dev/ttyUSB0".parse::<Binding>(),
            Err(SourceError::BadIndex(_))
        ));
        assert!(matches!(
            "x=/dev/ttyUSB0".parse::<Binding>(),
            Err(SourceError::BadIndex(_))
        ));
        assert!(matches!(
            "1=tcp://host".parse::<Binding>(),
            Err(SourceError::BadTcp(_))
        ));
        assert!(matches!(
            "1=tcp://host:0".parse::<Binding>(),
            Err(SourceError::BadTcp(_))
        ));
        assert!(matches!(
            "1=file:".parse::<Binding>(),
            Err(SourceError::Empty(_))
        ));
    }

    #[test]
    fn can_interfaces_and_gpio_lines_are_sources_too() {
        assert_eq!(
            "1=can:vcan0".parse::<Binding>().unwrap().source,
            Source::Can("vcan0".into())
        );
        let gpio = "2=gpio:gpiochip0:17".parse::<Binding>().unwrap();
        assert_eq!(
            gpio.source,
            Source::Gpio {
                chip: "/dev/gpiochip0".into(),
                line: 17
            }
        );
        assert_eq!(gpio.to_string(), "2=gpio:/dev/gpiochip0:17");
        for bad in [
            "1=can:",
            "1=gpio:gpiochip0",
            "1=gpio:gpiochip0:x",
            "1=gpio::3",
        ] {
            let e = bad.parse::<Binding>().unwrap_err().to_string();
            assert!(e.contains(&format!("'{}'", &bad[2..])), "{e}");
        }
    }

    #[test]
    fn replay_speed_is_max_or_a_factor() {
        assert_eq!("max".parse::<ReplaySpeed>().unwrap(), ReplaySpeed::Max);
        assert_eq!("1".parse::<ReplaySpeed>().unwrap(), ReplaySpeed::RealTime);
        assert_eq!(
            "10x".parse::<ReplaySpeed>().unwrap(),
            ReplaySpeed::Factor(10.0)
        );
        assert!("0".parse::<ReplaySpeed>().is_err());
        assert!("0.001".parse::<ReplaySpeed>().is_ok());
        assert!("1000000".parse::<ReplaySpeed>().is_ok());
        for bad in ["1e-300", "1e300", "inf", "NaN", "-1"] {
            let e = bad.parse::<ReplaySpeed>().unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
        assert!("fast".parse::<ReplaySpeed>().is_err());
    }
}
