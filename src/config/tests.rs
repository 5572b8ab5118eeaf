//! Tests of config.lua loading and validation.
