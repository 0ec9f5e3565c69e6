/*!
The engine: values, their freshness, timing and the script's sections. Pure: it is driven with `now` and
returns what to publish; it never touches a port, a clock or a broker.

- [`scheduler`]: the engine loop (telegrams, ticks, teleperiods, STATE);
- [`values`]: the value table, `=m`/`=d` lines and the SENSOR payloads;
- [`hooks`]: when the script's sections run and what their commands do;
- [`freshness`]: `--stale-after` and each meter's observed telegram interval;
- [`json`]: Tasmota's number and string printing.
*/

pub mod freshness;
pub mod hooks;
pub mod json;
pub mod scheduler;
pub mod values;
