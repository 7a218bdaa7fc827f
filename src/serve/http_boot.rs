//! UEFI HTTP boot of the signed UKIs (`serve --uefi-boot shim`): which UKI
//! the proxyDHCP offers an HTTP boot client. The firmware sends no MAC in
//! its HTTP request, but its DHCP packet has one, so the profile is picked
//! there, by the selection every boot path shares (`script::select`: an
//! operator's next boot, MAC, recorded inventory facts, tags, default), and
//! the offer names that profile's UKI by content. The UKI must be in the
//! index (`serve::ukis`, written by `mkimage keys sign-ukis`), built from
//! what the profile resolves to now, and in the content store; otherwise
//! the client gets iPXE, as before, and the log says why.

use std::sync::Arc;

use super::dhcp::UkiLookup;
use super::profiles::BootConfig;
use super::script;
use super::state::State;
use super::ukis::{self, Index};
use crate::artifact::{objects, Manifest};

/// The lookup the proxyDHCP calls with a client's MAC.
pub fn lookup(state: Arc<State>) -> UkiLookup {
    UkiLookup(Arc::new(move |mac: &str| uki_path(&state, mac)))
}

/// `/sha256/HEX/PROFILE.efi` of the UKI `mac` boots, or why there is none.
fn uki_path(state: &State, mac: &str) -> Result<String, String> {
    let dir = state.root.dir();
    let index = Index::load(dir).map_err(|e| format!("{e:#}"))?;
    if index.profiles.is_empty() {
        return Err(format!(
            "no UKI is signed for this server ({} names none: run `mkimage keys sign-ukis --dir {} --keys DIR --public-url URL` where the site key is)",
            ukis::INDEX,
            dir.display()
        ));
    }
    let manifest = Manifest::load(dir).map_err(|e| format!("{e:#}"))?;
    let config = match &state.boot_config {
        Some(path) => Some(BootConfig::load(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let (resolved, _, _) = script::select(state, config.as_ref(), &manifest, Some(mac))?;
    let profile = &resolved.profile;
    let Some(entry) = index.profiles.get(profile) else {
        return Err(format!(
            "profile {profile} has no signed UKI in {} (run `mkimage keys sign-ukis` again)",
            ukis::INDEX
        ));
    };
    if entry.inputs != ukis::inputs(&resolved) {
        return Err(format!("the UKI of profile {profile} was signed for other artifacts or arguments than the profile names now (run `mkimage keys sign-ukis` again)"));
    }
    match objects::open(dir, &entry.sha256) {
        Ok(Some(_)) => Ok(format!("/sha256/{}/{}", entry.sha256, entry.name)),
        Ok(None) => Err(format!(
            "the UKI of profile {profile} ({}) is not in the content store (run `mkimage keys sign-ukis` again)",
            entry.sha256
        )),
        Err(e) => Err(e.to_string()),
    }
}
