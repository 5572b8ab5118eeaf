//! The bottom of the house: small pieces every stage uses and that use nothing of the engine
//! (JSON string writing, UTC time as text, waiting on a ring, pinning threads to CPUs, C's
//! `strtod`).

pub(crate) mod backoff;
pub(crate) mod clock;
pub(crate) mod json;
pub(crate) mod pin;
pub(crate) mod strtod;
