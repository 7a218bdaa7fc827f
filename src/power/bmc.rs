//! One BMC, whatever its protocol: the [`Bmc`] trait, the actions and
//! power states it knows, and how it fails.

use std::time::Duration;

/// What `mkimage power` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    On,
    Off,
    Cycle,
    Status,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "on" => Some(Action::On),
            "off" => Some(Action::Off),
            "cycle" => Some(Action::Cycle),
            "status" => Some(Action::Status),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::On => "on",
            Action::Off => "off",
            Action::Cycle => "cycle",
            Action::Status => "status",
        }
    }
}

/// A machine's power, as its BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
}

impl PowerState {
    pub fn name(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        }
    }
}

/// Why a BMC did not do what it was asked. Never carries a password.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BmcError {
    #[error("BMC {bmc} unreachable: {why}")]
    Unreachable { bmc: String, why: String },
    #[error("BMC {bmc} refused the credentials `{credentials}` (user {user}): {why}")]
    Auth {
        bmc: String,
        credentials: String,
        user: String,
        why: String,
    },
    #[error("BMC {bmc}: no answer within {}s", .after.as_secs())]
    Timeout { bmc: String, after: Duration },
    #[error("BMC {bmc} refused `{what}`: {why}")]
    Refused {
        bmc: String,
        what: String,
        why: String,
    },
    #[error("BMC {bmc} does not answer as {protocol} does: {why}")]
    Protocol {
        bmc: String,
        protocol: &'static str,
        why: String,
    },
}

/// One node's BMC.
pub trait Bmc: Send + Sync {
    /// `ipmi 10.0.0.7:623`, `redfish https://10.0.0.8` (for messages).
    fn describe(&self) -> String;
    fn status(&self) -> Result<PowerState, BmcError>;
    /// Power on, off, or cycle (a reset of a running machine).
    fn power(&self, action: Action) -> Result<(), BmcError>;
    /// Boot from the network next time, once (with the EFI flag where the
    /// inventory says the node boots UEFI).
    fn boot_from_network_once(&self) -> Result<(), BmcError>;
}

/// How long one BMC request may take, unless told otherwise.
pub const BMC_TIMEOUT: Duration = Duration::from_secs(10);
