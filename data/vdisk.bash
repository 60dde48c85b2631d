# SPDX-License-Identifier: MIT
# bash completion for vdisk(8): commands, options (from `vdisk COMMAND --help`),
# formats (`vdisk formats`), --via ways, open disks for close/info, and image
# files by extension.

# The open disks: images, devices and ids from `vdisk list`.
_vdisk_open_disks() {
    vdisk list 2>/dev/null | awk 'NR > 1 { print $1; print $2; print $NF }'
}

# Options a command's --help prints.
_vdisk_options() {
    vdisk "$1" --help 2>/dev/null | grep -oE '(^|[ [|,])--?[A-Za-z][-A-Za-z]*' |
        grep -oE -- '--?[A-Za-z][-A-Za-z]*' | sort -u
}

_vdisk_image_files() {
    local exts
    exts=$(vdisk formats 2>/dev/null | paste -sd'|')
    _filedir "@(${exts:-raw|qcow2}|img|iso|raw)"
}

_vdisk() {
    local cur prev words cword cmd i
    _init_completion -s || return

    for ((i = 1; i < cword; i++)); do
        if [[ ${words[i]} != -* ]]; then
            cmd=${words[i]}
            break
        fi
    done
    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W '--help --version' -- "$cur"))
        else
            COMPREPLY=($(compgen -W 'create open recover close list info serve convert check luks commit rebase bench persist supervise formats resize save' -- "$cur"))
        fi
        return
    fi
    case $prev in
    --key-file | --new-key-file)
        _filedir
        return ;;
    -f | --format | -O)
        COMPREPLY=($(compgen -W "$(vdisk formats 2>/dev/null)" -- "$cur"))
        return ;;
    --via)
        COMPREPLY=($(compgen -W 'auto kmod loop ublk nbd fuse' -- "$cur"))
        return ;;
    -t | -T)
        COMPREPLY=($(compgen -W 'none writeback unsafe directsync writethrough' -- "$cur"))
        return ;;
    -r)
        if [[ $cmd == check ]]; then
            COMPREPLY=($(compgen -W 'leaks all' -- "$cur"))
            return
        fi ;;
    --repair)
        COMPREPLY=($(compgen -W 'leaks all' -- "$cur"))
        return ;;
    -o | --options | -c | -d | -S | -m | -n | --name | --listen | -l | --pattern | --flush-interval | --ram)
        return ;;
    --socket | -s | --overlay | -b | --backing)
        _filedir
        return ;;
    --tls)
        COMPREPLY=($(compgen -W 'off on require' -- "$cur"))
        return ;;
    --tls-certs)
        _filedir -d
        return ;;
    --tls-psk)
        _filedir
        return ;;
    --max-connections | --handshake-timeout)
        return ;;
    --snapshot-dir)
        _filedir -d
        return ;;
    --partition)
        return ;;
    -F | --backing-format)
        COMPREPLY=($(compgen -W "$(vdisk formats 2>/dev/null)" -- "$cur"))
        return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_vdisk_options "$cmd")" -- "$cur"))
        [[ ${COMPREPLY-} == *= ]] && compopt -o nospace
        return
    fi
    case $cmd in
    close | recover | save)
        COMPREPLY=($(compgen -W "$(_vdisk_open_disks)" -- "$cur")) ;;
    info | resize)
        COMPREPLY=($(compgen -W "$(_vdisk_open_disks)" -- "$cur"))
        _vdisk_image_files ;;
    persist)
        if [[ $cword -eq $((i + 1)) ]]; then
            COMPREPLY=($(compgen -W 'add remove list' -- "$cur"))
        elif [[ ${words[i + 1]} == remove ]]; then
            COMPREPLY=($(compgen -W "$(vdisk persist list 2>/dev/null | awk '{ print $1; print $NF }')" -- "$cur"))
        else
            _vdisk_image_files
        fi ;;
    supervise)
        COMPREPLY=($(compgen -W "$(vdisk persist list 2>/dev/null | awk '{ print $1; print $NF }')" -- "$cur")) ;;
    list | formats) ;;
    *)
        _vdisk_image_files ;;
    esac
} && complete -F _vdisk vdisk
