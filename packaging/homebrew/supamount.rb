# Homebrew formula (macOS and Linux). Builds from source with cargo.
#   brew install --HEAD ./packaging/homebrew/supamount.rb
# On macOS, macFUSE must be installed first (a cask, and a kernel extension you allow in
# System Settings); Homebrew's core taps refuse formulae that depend on it, so this one lives
# in the repository or a tap of its own.
class Supamount < Formula
  desc "Mount Supabase Storage buckets (or any S3 bucket) as directories through FUSE"
  # OWNER: the repository is not published yet; set both lines to its address when it is.
  homepage "https://github.com/OWNER/supamount"
  license "Apache-2.0"
  head "https://github.com/OWNER/supamount.git", branch: "main"

  depends_on "pkgconf" => :build
  depends_on "rust" => :build

  on_macos do
    # fuser links against libfuse; macFUSE ships it (cask "macfuse", not a formula).
    depends_on cask: "macfuse"
  end

  on_linux do
    depends_on "libfuse"
  end

  def install
    system "cargo", "install", *std_cargo_args
    system "cargo", "run", "--release", "--example", "gen-man", "--", buildpath/"man"
    man1.install Dir[buildpath/"man/*.1"]
    man8.install buildpath/"man/mount.supamount.8"
    # mount(8) looks for /sbin/mount.fuse.supamount; Homebrew cannot write there, so the
    # helper names live in sbin and the caveats say how to link them.
    sbin.install_symlink bin/"supamount" => "mount.supamount"
    sbin.install_symlink bin/"supamount" => "mount.fuse.supamount"
  end

  def caveats
    <<~EOS
      On macOS supamount needs macFUSE (https://osxfuse.github.io): install it, allow its
      system extension in System Settings > Privacy & Security, and reboot once.
      Unmount with `umount MOUNTPOINT` (macOS) or `fusermount3 -u MOUNTPOINT` (Linux).
      The macOS build is not tested by the project's CI; please report problems.

      For fstab-style mounts on Linux, link the helper where mount(8) looks for it:
        sudo ln -s #{opt_sbin}/mount.fuse.supamount /sbin/mount.fuse.supamount
    EOS
  end

  test do
    assert_match "supamount", shell_output("#{bin}/supamount --version")
    assert_match "fuse.supamount", shell_output("#{sbin}/mount.supamount --help")
  end
end
