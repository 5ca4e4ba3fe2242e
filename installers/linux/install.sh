#!/bin/sh
# Install ZooDesk for the current user (no administrator rights needed), or remove it.
#
#   ./install.sh                 install into ~/.local/opt/zoodesk, commands in ~/.local/bin
#   ./install.sh --prefix DIR    install the program into DIR instead
#   ./install.sh --uninstall     remove the program, menu entry and file type;
#                                models, settings and logs stay
#   ./install.sh --uninstall --purge
#                                also remove models, settings and logs (ZOODESK_HOME)
#
# Run it from the unpacked archive: it expects the bundle folder "zoodesk" next to it,
# with zoodesk.desktop, zoodesk-mime.xml and zoodesk.png.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
data_home=${XDG_DATA_HOME:-"$HOME/.local/share"}
prefix="$HOME/.local/opt/zoodesk"
bin_dir="$HOME/.local/bin"
action=install
purge=no

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        --uninstall) action=uninstall; shift ;;
        --purge) purge=yes; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

desktop_file="$data_home/applications/zoodesk.desktop"
mime_file="$data_home/mime/packages/zoodesk.xml"
icon_file="$data_home/icons/hicolor/256x256/apps/zoodesk.png"

refresh_desktop() {
    # Each tool is optional: without it the menu and file type appear after the next login.
    if command -v update-mime-database >/dev/null 2>&1; then
        update-mime-database "$data_home/mime" >/dev/null 2>&1 || true
    fi
    if command -v update-desktop-database >/dev/null 2>&1; then
        update-desktop-database "$data_home/applications" >/dev/null 2>&1 || true
    fi
    if command -v gtk-update-icon-cache >/dev/null 2>&1; then
        gtk-update-icon-cache -q -t "$data_home/icons/hicolor" >/dev/null 2>&1 || true
    fi
}

if [ "$action" = uninstall ]; then
    for link in "$bin_dir/zoodesk" "$bin_dir/zoodesk-cli"; do
        # Only our own links: a zoodesk installed another way stays.
        if [ -L "$link" ] && case "$(readlink "$link")" in "$prefix"/*) true ;; *) false ;; esac; then
            rm -f "$link"
        fi
    done
    if [ -x "$prefix/zoodesk-cli" ]; then
        rm -rf "$prefix"
    elif [ -e "$prefix" ]; then
        echo "install.sh: $prefix does not hold ZooDesk; left alone" >&2
    fi
    rm -f "$desktop_file" "$mime_file" "$icon_file"
    refresh_desktop
    home=${ZOODESK_HOME:-"$data_home/ZooDesk"}
    if [ "$purge" = yes ]; then
        rm -rf "$home"
        echo "ZooDesk removed, with its models, settings and logs ($home)."
    else
        echo "ZooDesk removed. Models, settings and logs stay in $home (--purge removes them)."
    fi
    exit 0
fi

if [ ! -x "$here/zoodesk/zoodesk-cli" ]; then
    echo "install.sh: no bundle at $here/zoodesk; run this script from the unpacked archive" >&2
    exit 1
fi

if [ -e "$prefix" ] && [ ! -x "$prefix/zoodesk-cli" ]; then
    echo "install.sh: $prefix exists and does not hold ZooDesk; choose another --prefix" >&2
    exit 1
fi

# Copy next to the destination first, then swap, so an interrupted copy never
# leaves a half-installed program under the final name.
mkdir -p "$(dirname "$prefix")" "$bin_dir"
staging="$prefix.new.$$"
rm -rf "$staging"
cp -a "$here/zoodesk" "$staging"
rm -rf "$prefix"
mv "$staging" "$prefix"

ln -sfn "$prefix/zoodesk" "$bin_dir/zoodesk"
ln -sfn "$prefix/zoodesk-cli" "$bin_dir/zoodesk-cli"

mkdir -p "$(dirname "$desktop_file")" "$(dirname "$mime_file")" "$(dirname "$icon_file")"
# The menu runs the program by its full path: ~/.local/bin is not on every session's PATH.
sed -e "s|^Exec=zoodesk|Exec=\"$prefix/zoodesk\"|" -e "s|^TryExec=zoodesk|TryExec=$prefix/zoodesk|" \
    "$here/zoodesk.desktop" >"$desktop_file"
cp "$here/zoodesk-mime.xml" "$mime_file"
cp "$here/zoodesk.png" "$icon_file"
refresh_desktop

echo "ZooDesk installed in $prefix."
echo "Start it from the applications menu, or run: $bin_dir/zoodesk (desktop), $bin_dir/zoodesk-cli (command line)"
case ":$PATH:" in
    *":$bin_dir:"*) ;;
    *) echo "Note: $bin_dir is not on your PATH; add it to run zoodesk-cli by name." ;;
esac
