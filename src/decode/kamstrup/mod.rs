/*!
Kamstrup KMP (`k`). Only the request side lives here so far; replies are matched by the generic
byte patterns of the model until a Kamstrup decoder lands.
*/

pub mod request;
