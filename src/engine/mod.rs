/*!
The engine: values, timing and (later) hooks. Pure: it is driven with `now` and returns what to
publish; it never touches a port or a broker.
*/

pub mod freshness;
pub mod json;
pub mod scheduler;
pub mod values;
