//! The native tenant context: the `tenancy_context` PostgreSQL extension
//! (`extensions/tenancy_context/`: C library, control file, versioned SQL), whose library
//! `build.rs` builds for each PostgreSQL major version with `pg_config` and server headers
//! at build time.
//!
//! A [`Cluster`](crate::Cluster) started by this crate writes the library matching its
//! server into its data directory and puts that directory first in
//! `dynamic_library_path`, so the library always matches this build. On PostgreSQL 18 and
//! later it also writes the extension's control and SQL files there and adds them to
//! `extension_control_path`, so `CREATE EXTENSION tenancy_context` works without
//! installing anything into the server; on 14–17 that needs the files installed into the
//! server's share directory (`make install`, see the extension's Makefile). The SDK's
//! bootstrap creates the extension when the server offers it, else the same functions
//! from the library directly (`tenancy_sdk::bootstrap::NATIVE_SQL`), else the PL/pgSQL implementation.

use std::path::Path;

use crate::{io_err, HarnessError};

include!(concat!(env!("OUT_DIR"), "/native_libraries.rs"));

/// The name the SQL `CREATE FUNCTION … AS '<name>'` uses for the library, and the
/// extension's name.
pub const NATIVE_LIBRARY_NAME: &str = "tenancy_context";

/// The extension's control file.
pub const EXTENSION_CONTROL: &str =
    include_str!("../../../extensions/tenancy_context/tenancy_context.control");

/// The extension's versioned SQL scripts: (file name, contents). Version 1.3 is 1.0 and
/// the update scripts to 1.1, 1.2 and 1.3, which are also what `ALTER EXTENSION
/// tenancy_context UPDATE` runs on a database created at an earlier version.
pub const EXTENSION_SCRIPTS: &[(&str, &str)] = &[
    (
        "tenancy_context--1.0.sql",
        include_str!("../../../extensions/tenancy_context/tenancy_context--1.0.sql"),
    ),
    (
        "tenancy_context--1.0--1.1.sql",
        include_str!("../../../extensions/tenancy_context/tenancy_context--1.0--1.1.sql"),
    ),
    (
        "tenancy_context--1.1--1.2.sql",
        include_str!("../../../extensions/tenancy_context/tenancy_context--1.1--1.2.sql"),
    ),
    (
        "tenancy_context--1.2--1.3.sql",
        include_str!("../../../extensions/tenancy_context/tenancy_context--1.2--1.3.sql"),
    ),
];

/// The extension version this build creates (`default_version` in the control file).
pub const EXTENSION_VERSION: &str = "1.3";

/// The first major version with `extension_control_path`.
const CONTROL_PATH_MAJOR: u32 = 18;

/// The native library built for PostgreSQL `major`, if headers for it were available.
pub fn native_context_library(major: u32) -> Option<&'static [u8]> {
    NATIVE_LIBRARIES
        .iter()
        .find(|(m, _)| *m == major)
        .map(|(_, bytes)| *bytes)
}

/// The major versions this build has a native library for.
pub fn native_context_majors() -> Vec<u32> {
    NATIVE_LIBRARIES.iter().map(|(m, _)| *m).collect()
}

/// Whether `TENANCY_REQUIRE_NATIVE=1`: every place that would fall back to the PL/pgSQL
/// context fails instead (the build, cluster start, bootstrap and the tests). The one
/// reading of the variable, `tenancy-conn`'s, shared by every component.
pub use tenancy_conn::native_required;

/// Writes the native library (and on PostgreSQL 18+, the extension's files) for server
/// `major` into `data_dir` and returns the settings that make the server find them.
/// `chown` gives a written path to the server's user. Nothing is written when this
/// build has no library for `major`; that is an error when `require`
/// ([`native_required`]).
pub(crate) fn install_into_data_dir(
    data_dir: &Path,
    major: u32,
    require: bool,
    chown: &dyn Fn(&Path) -> Result<(), HarnessError>,
) -> Result<Vec<(String, String)>, HarnessError> {
    use std::os::unix::fs::PermissionsExt;
    let Some(lib) = native_context_library(major) else {
        if require {
            return Err(HarnessError::NativeMissing {
                major,
                detail: format!(
                    "this build has the library only for {:?}; install postgresql-server-dev-{major} \
                     (or point PG_BIN at a server with pg_config and headers) and rebuild",
                    native_context_majors()
                ),
            });
        }
        tracing::warn!(
            major,
            "no native tenant-context library was built for this PostgreSQL; databases get the slower PL/pgSQL context"
        );
        return Ok(Vec::new());
    };
    let write = |file: &Path, bytes: &[u8]| -> Result<(), HarnessError> {
        std::fs::write(file, bytes).map_err(io_err(format!("writing {}", file.display())))?;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644))
            .map_err(io_err(format!("chmod {}", file.display())))?;
        chown(file)
    };
    let mkdir = |dir: &Path| -> Result<(), HarnessError> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        chown(dir)
    };
    let lib_dir = data_dir.join("tenancy_lib");
    mkdir(&lib_dir)?;
    write(&lib_dir.join(format!("{NATIVE_LIBRARY_NAME}.so")), lib)?;
    // First: the control file names the library without $libdir, so this copy (built with
    // this program) wins over one installed into the server by an older `make install`.
    // Preloaded (found through dynamic_library_path): the library then keeps the replay
    // registry of single-use tokens in shared memory, which transaction-mode pools use.
    let mut settings = vec![
        (
            "dynamic_library_path".to_owned(),
            format!("{}:$libdir", lib_dir.display()),
        ),
        (
            "shared_preload_libraries".to_owned(),
            NATIVE_LIBRARY_NAME.to_owned(),
        ),
    ];
    if major >= CONTROL_PATH_MAJOR {
        let share = data_dir.join("tenancy_ext");
        let ext = share.join("extension");
        mkdir(&share)?;
        mkdir(&ext)?;
        write(
            &ext.join(format!("{NATIVE_LIBRARY_NAME}.control")),
            EXTENSION_CONTROL.as_bytes(),
        )?;
        for (name, sql) in EXTENSION_SCRIPTS {
            write(&ext.join(name), sql.as_bytes())?;
        }
        settings.push((
            "extension_control_path".to_owned(),
            format!("{}:$system", share.display()),
        ));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A major version no build has a library for.
    const NO_SUCH_MAJOR: u32 = 99;

    #[test]
    fn a_server_without_a_library_fails_when_native_is_required_and_says_what_to_install() {
        let dir = std::env::temp_dir().join(format!("tenancy-native-{}", std::process::id()));
        let err = install_into_data_dir(&dir, NO_SUCH_MAJOR, true, &|_| Ok(()))
            .expect_err("required, and there is no library for 99");
        let text = err.to_string();
        assert!(text.contains("TENANCY_REQUIRE_NATIVE=1"), "{text}");
        assert!(text.contains("postgresql-server-dev-99"), "{text}");
        assert!(!dir.exists(), "nothing is written");
        let settings = install_into_data_dir(&dir, NO_SUCH_MAJOR, false, &|_| Ok(()))
            .expect("not required: the PL/pgSQL fallback");
        assert!(settings.is_empty());
        assert!(!dir.exists(), "nothing is written");
    }

    #[test]
    fn the_embedded_extension_files_agree_on_the_version() {
        assert!(
            EXTENSION_CONTROL.contains(&format!("default_version = '{EXTENSION_VERSION}'")),
            "the control file's default_version is {EXTENSION_VERSION}"
        );
        // The default version is reached by a full script or by an update script to it.
        assert!(EXTENSION_SCRIPTS.iter().any(|(name, _)| {
            *name == format!("{NATIVE_LIBRARY_NAME}--{EXTENSION_VERSION}.sql")
                || name.ends_with(&format!("--{EXTENSION_VERSION}.sql"))
                    && name.matches("--").count() == 2
        }));
    }
}
