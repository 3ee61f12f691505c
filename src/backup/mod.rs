//! Air-gapped backups. Today: the archive format ([`archive`]), written and verified as a
//! stream, and what a destination directory holds ([`catalog`]): the record beside each
//! archive, listing and retention. Export from the mirror, restore into a registry,
//! encryption, split parts and incremental chains build on them.

pub mod archive;
pub mod catalog;
