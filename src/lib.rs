/*!
sml: run Tasmota smart-meter scripts off the ESP.

The layout follows the data: [`script`] (text to model) -> [`decode`] (bytes to values, per protocol)
-> [`link`] (serial, TCP, replay) -> [`engine`] (values, timing, hooks) -> [`publish`] (MQTT, stdout)
-> [`cli`]; [`runner`] is the async glue that runs one task per meter and the engine loop. No decoder knows MQTT; no link knows a protocol.
*/

pub mod backoff;
pub mod cli;
pub mod decode;
pub mod engine;
pub mod hex;
pub mod hooks;
pub mod http;
pub mod link;
pub mod publish;
pub mod runner;
pub mod script;
pub mod service;
mod timer;
