//! anec's integration tests: one test binary; each area is a module under tests/suite/.

mod suite;
