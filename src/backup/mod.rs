//! Air-gapped backups: the archive format ([`archive`]) and its metadata ([`metadata`]),
//! the bytes under it ([`sink`]: age encryption and split parts), export from the mirror
//! ([`export`], run start to finish by [`job`]), restore into any registry ([`restore`]), and
//! what a destination folder holds ([`catalog`]: records, listing, retention). Everything
//! streams: no blob is ever held whole in memory, and no scratch space is needed.

pub mod archive;
pub mod catalog;
pub mod export;
pub mod job;
pub mod metadata;
pub mod restore;
pub mod sink;

pub use job::observe;
