//! The `shardlog` command as users and operators run it: the server killed
//! with SIGKILL under load, the offline `verify` and `dump` verbs, and the
//! `groups` client verb.

mod abuse;
mod groups;
mod kill9;
mod verbs;
mod verify;

// The web console in headless Chromium (needs node and /usr/bin/chromium).
mod console;
