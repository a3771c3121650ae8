//! The runner protocol over `exec`, compared with `reference`: top-1 agreement, KL, logit error,
//! perplexity, hidden-state cosine.
