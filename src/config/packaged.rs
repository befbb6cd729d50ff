//! The configuration the package installs as `/etc/fieldrelay/config.yaml`: the shipped example
//! (`config/example.yaml`) with the gateway's login on the on-site broker turned on.
//!
//! # Why two files from one
//! `check` and `run` open every file a configuration names, and refuse one that is missing. The
//! gateway's password file (`/etc/fieldrelay/local-password`) exists only once the package's
//! postinst generated it, so an example naming it would fail `check` on every other machine
//! (a developer's, the demo's, CI's). The example therefore has the two login lines commented
//! out, and the package build ([`installed`], through `examples/package_assets.rs`) turns exactly
//! those two lines on: the example stays the one source of both files, and a change to it that
//! moves or renames those lines fails the package build instead of shipping a config without a
//! login.

use std::path::Path;

use super::load_str;

/// The example, as built into this binary.
pub const EXAMPLE: &str = include_str!("../../config/example.yaml");

/// The uplink's login as installed: the account the postinst adds to the on-site broker, and
/// the password file it generates.
pub const USERNAME: &str = "fieldrelay";
pub const PASSWORD_FILE: &str = "/etc/fieldrelay/local-password";

/// `example` with its commented uplink login turned on. Fails when the example does not hold
/// each of the two lines commented exactly once, or when the result is not a valid
/// configuration with that login (the files it names are not opened: they exist only where the
/// package is installed).
pub fn installed(example: &str) -> Result<String, String> {
    let mut text = example.to_owned();
    for line in [
        format!("  username: {USERNAME}"),
        format!("  password_file: {PASSWORD_FILE}"),
    ] {
        let commented = format!("  # {}", line.trim_start());
        let found = text.lines().filter(|l| *l == commented).count();
        if found != 1 {
            return Err(format!(
                "the example has the line {commented:?} {found} times, expected once"
            ));
        }
        text = text
            .lines()
            .map(|l| if l == commented { line.as_str() } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        text.push('\n');
    }
    let config = load_str(&text, "config.yaml").map_err(|errors| errors.to_string())?;
    let uplink = &config.uplink;
    if uplink.username.as_deref() != Some(USERNAME)
        || uplink.password_file.as_deref() != Some(Path::new(PASSWORD_FILE))
    {
        return Err(format!(
            "the installed config's uplink login is {:?} with {:?}, expected {USERNAME:?} with \
             {PASSWORD_FILE:?}",
            uplink.username, uplink.password_file
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example names no login (so it passes `check` anywhere); the installed config is the
    /// example plus exactly the two login lines.
    #[test]
    fn the_installed_config_is_the_example_with_the_login_on() {
        let example = load_str(EXAMPLE, "example.yaml").unwrap();
        assert_eq!(example.uplink.username, None);
        assert_eq!(example.uplink.password_file, None);
        let installed = installed(EXAMPLE).unwrap();
        let changed: Vec<(&str, &str)> = EXAMPLE
            .lines()
            .zip(installed.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(
            changed,
            [
                ("  # username: fieldrelay", "  username: fieldrelay"),
                (
                    "  # password_file: /etc/fieldrelay/local-password",
                    "  password_file: /etc/fieldrelay/local-password"
                ),
            ]
        );
        assert_eq!(EXAMPLE.lines().count(), installed.lines().count());
    }

    #[test]
    fn an_example_without_the_commented_login_is_refused() {
        let moved = EXAMPLE.replace("  # username: fieldrelay\n", "");
        assert!(installed(&moved).unwrap_err().contains("0 times"));
        let twice = EXAMPLE.replace(
            "  # username: fieldrelay\n",
            "  # username: fieldrelay\n  # username: fieldrelay\n",
        );
        assert!(installed(&twice).unwrap_err().contains("2 times"));
    }
}
