//! The `shardlog` command as users and operators run it: the server killed
//! with SIGKILL under load, the offline `verify` and `dump` verbs, the
//! `groups` client verb, and the web console driven by a headless browser.

mod console;
mod groups;
mod kill9;
mod verbs;
mod verify;
