/*!
Tasmota's topic scheme: the full topic (`FullTopic`, default `%prefix%/%topic%/`) with `%prefix%`
replaced by `tele` and `%topic%` by the device topic, then `SENSOR`, `STATE` or `LWT` appended. With
`home1/%prefix%/%topic%/` and topic `myelectricmeter`, SENSOR goes to
`home1/tele/myelectricmeter/SENSOR`.
*/

pub const DEFAULT_FULL_TOPIC: &str = "%prefix%/%topic%/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub sensor: String,
    pub state: String,
    pub lwt: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic '{0}' is empty or holds one of '+', '#', '/' or a blank")]
    BadTopic(String),
    #[error("full topic '{0}' must not hold '+' or '#'")]
    BadFullTopic(String),
}

impl Topics {
    pub fn new(full_topic: &str, topic: &str) -> Result<Topics, TopicError> {
        if topic.is_empty() || topic.contains(['+', '#', '/', ' ']) {
            return Err(TopicError::BadTopic(topic.into()));
        }
        if full_topic.contains(['+', '#']) {
            return Err(TopicError::BadFullTopic(full_topic.into()));
        }
        let mut base = full_topic
            .replace("%topic%", topic)
            .replace("%prefix%", "tele");
        // Tasmota adds the separator when the full topic lacks it.
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok(Topics {
            sensor: format!("{base}SENSOR"),
            state: format!("{base}STATE"),
            lwt: format!("{base}LWT"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_full_topic_gives_tele_topic_sensor() {
        let t = Topics::new(DEFAULT_FULL_TOPIC, "tasmota_ABC123").unwrap();
        assert_eq!(t.sensor, "tele/tasmota_ABC123/SENSOR");
        assert_eq!(t.state, "tele/tasmota_ABC123/STATE");
        assert_eq!(t.lwt, "tele/tasmota_ABC123/LWT");
    }

    #[test]
    fn the_seeds_full_topic_gives_what_mqttwarn_subscribes_to() {
        let t = Topics::new("home1/%prefix%/%topic%/", "myelectricmeter").unwrap();
        assert_eq!(t.sensor, "home1/tele/myelectricmeter/SENSOR");
        assert_eq!(
            Topics::new("home1/%prefix%/%topic%", "m").unwrap().lwt,
            "home1/tele/m/LWT"
        );
    }

    #[test]
    fn wildcards_are_refused() {
        assert!(Topics::new(DEFAULT_FULL_TOPIC, "a/b").is_err());
        assert!(Topics::new(DEFAULT_FULL_TOPIC, "").is_err());
        assert!(Topics::new("x/#/%topic%/", "a").is_err());
    }
}
