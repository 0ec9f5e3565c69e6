/*!
Modbus (`m`, `M`): RTU on a serial line, or TCP when the meter's source is an address. Only the
request side lives here so far (the reply matching is still the generic byte-pattern work of the
front end's model); replies are decoded once a Modbus decoder lands.
*/

pub mod request;
