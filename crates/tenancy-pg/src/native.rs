//! The native tenant-context library (`native/tenancy_context.c`, built by `build.rs` for
//! each PostgreSQL major version whose server headers were installed at build time).
//!
//! A [`Cluster`](crate::Cluster) started by this crate writes the library matching its
//! server into its data directory and adds that directory to `dynamic_library_path`, so
//! the SDK's bootstrap can create `tenancy.enter` and `tenancy.current_tenant_id` as C
//! functions. Elsewhere (a managed server) the library is absent and the bootstrap
//! installs the PL/pgSQL implementation of the same two functions.

include!(concat!(env!("OUT_DIR"), "/native_libraries.rs"));

/// The name the SQL `CREATE FUNCTION … AS '<name>'` uses for the library.
pub const NATIVE_LIBRARY_NAME: &str = "tenancy_context";

/// The native library built for PostgreSQL `major`, if headers for it were available.
pub fn native_context_library(major: u32) -> Option<&'static [u8]> {
    NATIVE_LIBRARIES
        .iter()
        .find(|(m, _)| *m == major)
        .map(|(_, bytes)| *bytes)
}
