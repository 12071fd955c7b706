//! One error type for every stage, with a stable machine-readable [`ErrorCode`].
//!
//! The CLI maps codes to exit statuses and the wasm binding copies them onto the JS `Error`'s
//! `code` property, so a caller can react to "wrong base" differently from "corrupt delta"
//! without parsing messages.

use std::fmt;

/// What went wrong, in a form scripts can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A model file is not a well-formed safetensors file.
    BadSafetensors,
    /// The delta is damaged: a checksum failed, a table is inconsistent, a stream does not decode.
    CorruptDelta,
    /// The delta ended before all of it was read.
    TruncatedDelta,
    /// The delta is from a newer (or unknown) format version.
    UnsupportedVersion,
    /// The base given is not the one the delta was made against.
    WrongBase,
    /// Encoding inputs that cannot be paired or options that make no sense.
    InvalidInput,
    /// Reading or writing a file failed.
    Io,
    /// The delta rebuilds another file than the one the caller pinned (`--expect-sha256`).
    UnexpectedTarget,
    /// A bug in zipllm: an invariant broke (in the wasm build, a panic caught at the boundary).
    Internal,
    /// A store object is missing, truncated or corrupt (the message names it and the repos
    /// that need it).
    StoreCorrupt,
    /// The store holds no such repo, revision or file.
    NotFound,
    /// A request to the object store failed (network, permissions, service error).
    Storage,
}

impl ErrorCode {
    /// The stable name used across the CLI's `--json` output and the JS `Error.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadSafetensors => "BAD_SAFETENSORS",
            ErrorCode::CorruptDelta => "CORRUPT_DELTA",
            ErrorCode::TruncatedDelta => "TRUNCATED_DELTA",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::WrongBase => "WRONG_BASE",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::Io => "IO",
            ErrorCode::UnexpectedTarget => "UNEXPECTED_TARGET",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::StoreCorrupt => "STORE_CORRUPT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Storage => "STORAGE",
        }
    }

    /// The process exit status the CLI uses for this code (documented in the README).
    pub fn exit_status(self) -> i32 {
        match self {
            ErrorCode::Io => 1,
            ErrorCode::InvalidInput => 2,
            ErrorCode::BadSafetensors => 3,
            ErrorCode::CorruptDelta | ErrorCode::TruncatedDelta => 4,
            ErrorCode::UnsupportedVersion => 5,
            ErrorCode::WrongBase => 6,
            ErrorCode::UnexpectedTarget => 7,
            ErrorCode::StoreCorrupt => 8,
            ErrorCode::NotFound => 9,
            ErrorCode::Storage => 10,
            ErrorCode::Internal => 70,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every fallible operation in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file is malformed; `what` names the problem (and the tensor, where there is one).
    #[error("bad safetensors file: {what}")]
    BadSafetensors { what: String },
    /// The delta failed a consistency or checksum test.
    #[error("corrupt delta: {what}")]
    CorruptDelta { what: String },
    /// The delta stopped short.
    #[error("truncated delta: {what}")]
    TruncatedDelta { what: String },
    /// The delta's format version is not one this build reads.
    #[error("unsupported delta format version {found} (this build reads version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    /// The base does not match the one recorded in the delta.
    #[error("wrong base: {what}")]
    WrongBase { what: String },
    /// The caller asked for something that cannot be done with these inputs.
    #[error("{what}")]
    InvalidInput { what: String },
    /// The delta does not rebuild the file the caller expects.
    #[error("unexpected target: {what}")]
    UnexpectedTarget { what: String },
    /// An internal invariant broke: a bug, never a property of the input.
    #[error("internal error: {what}")]
    Internal { what: String },
    /// A store object is missing or damaged.
    #[error("store object {object} is {what}{}", needed_by(repos))]
    StoreCorrupt {
        /// The object's key.
        object: String,
        /// `missing`, `truncated`, `corrupt: …`.
        what: String,
        /// The `repo@revision`s whose files need it (filled in where known).
        repos: Vec<String>,
    },
    /// No such repo, revision or file in the store.
    #[error("not found: {what}")]
    NotFound { what: String },
    /// An object store request failed.
    #[error("{context}: {message}")]
    Storage { context: String, message: String },
    /// An I/O error, with the path or operation it concerns.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::BadSafetensors { .. } => ErrorCode::BadSafetensors,
            Error::CorruptDelta { .. } => ErrorCode::CorruptDelta,
            Error::TruncatedDelta { .. } => ErrorCode::TruncatedDelta,
            Error::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Error::WrongBase { .. } => ErrorCode::WrongBase,
            Error::InvalidInput { .. } => ErrorCode::InvalidInput,
            Error::Io { .. } => ErrorCode::Io,
            Error::UnexpectedTarget { .. } => ErrorCode::UnexpectedTarget,
            Error::Internal { .. } => ErrorCode::Internal,
            Error::StoreCorrupt { .. } => ErrorCode::StoreCorrupt,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::Storage { .. } => ErrorCode::Storage,
        }
    }

    pub(crate) fn bad_safetensors(what: impl Into<String>) -> Self {
        Error::BadSafetensors { what: what.into() }
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Error::CorruptDelta { what: what.into() }
    }

    pub(crate) fn truncated(what: impl Into<String>) -> Self {
        Error::TruncatedDelta { what: what.into() }
    }

    pub(crate) fn wrong_base(what: impl Into<String>) -> Self {
        Error::WrongBase { what: what.into() }
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Error::InvalidInput { what: what.into() }
    }

    #[cfg_attr(not(feature = "store"), allow(dead_code))]
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    #[cfg_attr(not(feature = "store"), allow(dead_code))]
    pub(crate) fn store_corrupt(object: impl Into<String>, what: impl Into<String>) -> Self {
        Error::StoreCorrupt {
            object: object.into(),
            what: what.into(),
            repos: Vec::new(),
        }
    }

    pub(crate) fn internal(what: impl Into<String>) -> Self {
        Error::Internal { what: what.into() }
    }

    /// Wraps an I/O error with what was being done (usually a path).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

fn needed_by(repos: &[String]) -> String {
    if repos.is_empty() {
        String::new()
    } else {
        format!(" (needed by {})", repos.join(", "))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
