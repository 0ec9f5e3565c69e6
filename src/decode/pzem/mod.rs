/*!
PZEM-004T (`p`). Only the request side lives here so far; replies are matched by the generic byte
patterns of the model until a PZEM decoder lands.
*/

pub mod request;
