//! The bottom of the house: small pieces every stage uses and that use nothing of the engine
//! (JSON string writing, UTC time as text).

pub mod clock;
pub mod json;
