//! Calibration: the data the calibration pass runs through the model (`data`).

pub mod data;
