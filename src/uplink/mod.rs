//! Uplink to the cloud MQTT broker (to be implemented).
