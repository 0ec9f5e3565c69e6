/*! Sinks for SENSOR payloads: MQTT, stdout. */
