//! Writes the man pages of the package into the directory given as the only argument:
//! `supamount.1` and one page per subcommand from the clap definition, and `mount.supamount.8`
//! from the mount helper's help. Run by `packaging/build-deb.sh` as
//! `cargo run --release --example gen-man -- DIR`; an example (not the product binary), so the
//! man-page generator stays a dev-dependency.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .expect("usage: gen-man DIR");
    std::fs::create_dir_all(&dir)?;
    let cli = supamount::cli::Cli::command();
    write_page(&dir, "supamount.1", &cli)?;
    for sub in cli.get_subcommands() {
        // clap keeps names as static strings; this program ends right after.
        let name: &'static str = format!("supamount-{}", sub.get_name()).leak();
        let sub = sub.clone().name(name);
        write_page(&dir, &format!("{name}.1"), &sub)?;
    }
    std::fs::write(dir.join("mount.supamount.8"), helper_page())?;
    Ok(())
}

fn write_page(dir: &Path, file: &str, cmd: &clap::Command) -> std::io::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    std::fs::write(dir.join(file), out)
}

/// The helper's `--help` text as a man page: one preformatted section, so the options listed
/// there and in the page cannot drift apart.
fn helper_page() -> String {
    let body: String = supamount::mount_helper::help()
        .lines()
        .map(|line| {
            let line = line.replace('\\', "\\e");
            // A line starting with `.` or `'` would be read as a roff request.
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    format!(
        ".TH MOUNT.SUPAMOUNT 8 \"\" \"supamount {}\"\n.SH NAME\nmount.supamount \\- mount helper \
         for supamount (fstab, mount \\-t fuse.supamount)\n.SH DESCRIPTION\n.nf\n{body}.fi\n\
         .SH SEE ALSO\nsupamount(1), mount(8), fstab(5), mount.fuse3(8)\n",
        env!("CARGO_PKG_VERSION")
    )
}
