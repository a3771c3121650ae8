//! LUT palettization: the exact 1-D k-means LUT per group of output channels, and error metrics.
