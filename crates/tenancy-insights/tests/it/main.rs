//! Integration tests of tenancy-insights: the sketch's error bound, the recorder's
//! bounded memory, the server-side window, and the noisy-neighbour flag from load
//! generated against a real PostgreSQL cluster through the SDK.

mod anomaly;
mod cluster;
mod recorder;
mod sketch;
mod window;
