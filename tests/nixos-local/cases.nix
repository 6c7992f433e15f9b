# The configurations ./checks.nix judges, beyond the VM test nodes and the
# README examples: each a list of NixOS modules added to the flake's module
# and a base system with a root file system. `vm = true` adds qemu-vm.nix's
# fileSystems override (./stand-ins.nix).
#
# Invariant: option paths here are the module's public interface; a renamed
# option makes the case fail to evaluate, which ./checks.nix reports.
{ lib, repo }:

let
  secondStore = {
    services.snix-lower-store = {
      enable = true;
      lower.device = "/dev/disk/by-label/lower-store";
      overlay.root = "/var/lib/snix-overlay";
      registrations = [ "/var/lib/snix-overlay/lower/registration" ];
    };
  };
  second = extra: {
    modules = [
      secondStore
      extra
    ];
  };
  systemStore = {
    boot.initrd.systemd.enable = true;
    services.snix-lower-store = {
      enable = true;
      placement = "system-store";
      lower.device = "/dev/disk/by-label/lower-store";
      registrations = [ "/nix/.snix-lower/registration" ];
    };
  };
  # What the nspawn boot runs: the lower store is a directory bound in place.
  second-store-bind = {
    modules = [
      {
        services.snix-lower-store = {
          enable = true;
          lower.device = "/srv/lower-image";
          lower.fsType = "none";
          lower.options = [
            "bind"
            "ro"
          ];
          overlay.root = "/var/lib/snix-overlay";
          registrations = [ "/var/lib/snix-overlay/lower/registration" ];
          logLevel = "debug";
        };
        # The nspawn container has no build users and no sandbox support.
        nix.settings = {
          experimental-features = [ "nix-command" ];
          sandbox = false;
          build-users-group = "";
        };
      }
    ];
  };
in
{
  second-store = second { };

  inherit second-store-bind;

  # The changed configuration booted next: other socket, mode and log level.
  second-store-bind-changed = {
    modules = [
      {
        services.snix-lower-store = {
          enable = true;
          lower.device = "/srv/lower-image";
          lower.fsType = "none";
          lower.options = [
            "bind"
            "ro"
          ];
          overlay.root = "/var/lib/snix-overlay";
          registrations = [ "/var/lib/snix-overlay/lower/registration" ];
          socket.path = "/run/snix-lower-store-alt/socket";
          socket.mode = "0660";
          logLevel = "info";
          idleExitAfter = "30s";
        };
        # The nspawn container has no build users and no sandbox support.
        nix.settings = {
          experimental-features = [ "nix-command" ];
          sandbox = false;
          build-users-group = "";
        };
      }
    ];
  };

  # The switch part (tests/nixos-local/switch.py): from second-store-bind,
  # only the socket's path and mode change; then the module disabled.
  second-store-bind-socket = {
    modules = [
      {
        services.snix-lower-store = {
          enable = true;
          lower.device = "/srv/lower-image";
          lower.fsType = "none";
          lower.options = [
            "bind"
            "ro"
          ];
          overlay.root = "/var/lib/snix-overlay";
          registrations = [ "/var/lib/snix-overlay/lower/registration" ];
          logLevel = "debug";
          socket.path = "/run/snix-lower-store-alt/socket";
          socket.mode = "0660";
        };
        nix.settings = {
          experimental-features = [ "nix-command" ];
          sandbox = false;
          build-users-group = "";
        };
      }
    ];
  };
  second-store-bind-disabled = {
    modules = [
      {
        services.snix-lower-store.enable = false;
        nix.settings = {
          experimental-features = [ "nix-command" ];
          sandbox = false;
          build-users-group = "";
        };
      }
    ];
  };

  # The switch part's lower change (issue 21 part 1): from -lower-a to
  # -lower-b only lower.device changes, to a second lower directory the
  # nspawn boot binds in from the start; broken paths are invalidated.
  second-store-bind-lower-a = {
    modules = second-store-bind.modules ++ [
      { services.snix-lower-store.lower.onBrokenPaths = "invalidate"; }
    ];
  };
  second-store-bind-lower-b = {
    modules = second-store-bind.modules ++ [
      {
        services.snix-lower-store.lower = {
          onBrokenPaths = "invalidate";
          device = lib.mkForce "/srv/lower-image-b";
        };
      }
    ];
  };

  # lower.index = "image": the image's own index, no registrations.
  second-store-image.modules = [
    {
      services.snix-lower-store = {
        enable = true;
        lower.device = "/dev/disk/by-label/lower-store";
        lower.index = "image";
      };
    }
  ];
  image-with-registrations = second { services.snix-lower-store.lower.index = "image"; };
  # Store objects at the top of the mount: no image root.
  image-store-top.modules = [
    {
      services.snix-lower-store = {
        enable = true;
        lower.device = "/dev/disk/by-label/lower-store";
        lower.index = "image";
        lower.storeDir = "/var/lib/snix-overlay/lower";
      };
    }
  ];
  image-check-full.modules = [
    {
      services.snix-lower-store = {
        enable = true;
        lower.device = "/dev/disk/by-label/lower-store";
        lower.index = "image";
        lower.imageCheck = "full";
        stateDir = "/var/lib/snix-lower-store-image";
      };
    }
  ];
  system-store-image.modules = [
    systemStore
    {
      services.snix-lower-store = {
        lower.index = "image";
        registrations = lib.mkForce [ ];
      };
    }
  ];
  # What the nspawn boot runs in image mode: a directory image made by the
  # flake's mkLowerImage (format = "directory"), bound in place.
  second-store-bind-image = {
    modules = [
      {
        services.snix-lower-store = {
          enable = true;
          lower.device = "/srv/lower-image";
          lower.fsType = "none";
          lower.options = [
            "bind"
            "ro"
          ];
          lower.index = "image";
          overlay.root = "/var/lib/snix-overlay";
          logLevel = "debug";
        };
        nix.settings = {
          experimental-features = [ "nix-command" ];
          sandbox = false;
          build-users-group = "";
        };
      }
    ];
  };

  enable-alone.modules = [ { services.snix-lower-store.enable = true; } ];

  enable-alone-systemd-initrd.modules = [
    {
      services.snix-lower-store.enable = true;
      boot.initrd.systemd.enable = true;
    }
  ];

  # The same with a device: the second store (default placement).
  second-store-systemd-initrd = second { boot.initrd.systemd.enable = true; };

  user-experimental-string = second {
    nix.settings.experimental-features = "nix-command flakes";
  };

  # issue 21 part 3: a user's extra-experimental-features as a string (as
  # nix.conf has it) next to the module's list.
  user-extra-experimental-string = second {
    nix.settings.extra-experimental-features = "flakes";
  };

  registration-path = second {
    services.snix-lower-store.registrations = lib.mkForce [ ./example-registration ];
  };

  socket-mode-changed = second { services.snix-lower-store.socket.mode = "0660"; };
  socket-group-changed = second { services.snix-lower-store.socket.group = "wheel"; };
  socket-path-changed = second { services.snix-lower-store.socket.path = "/run/snix-other/socket"; };

  # Named as before the rename (services.snix-lower-store.nix.enable), as an
  # existing configuration would have it.
  nix-enable-second-store = second { services.snix-lower-store.nix.enable = true; };
  configure-nix-second-store = second { services.snix-lower-store.configureNix = true; };

  # The system-store placement, as a user would enable it.
  system-store.modules = [ systemStore ];

  system-store-without-initrd.modules = [
    systemStore
    { boot.initrd.systemd.enable = lib.mkForce false; }
  ];

  system-store-without-device.modules = [
    systemStore
    { services.snix-lower-store.lower.device = lib.mkForce null; }
  ];

  user-nix-config.modules = [
    systemStore
    { environment.variables.NIX_CONFIG = "show-trace = true"; }
  ];

  # Misspelt options of the kinds the VM test nodes set: each must fail to
  # evaluate ("The option ... does not exist"), as on NixOS. `misspelt` names
  # the option for tests/nixos-local/run.
  misspelt-virtualisation = {
    vm = true;
    misspelt = "virtualisation.memorysize";
    modules = [ { virtualisation.memorysize = 1024; } ];
  };
  misspelt-virtualisation-qemu = {
    vm = true;
    misspelt = "virtualisation.qemu.option";
    modules = [ { virtualisation.qemu.option = [ "-m" ]; } ];
  };
  misspelt-boot-loader = {
    vm = true;
    misspelt = "boot.loader.grub.enabled";
    modules = [ { boot.loader.grub.enabled = false; } ];
  };
  misspelt-system-switch = {
    vm = true;
    misspelt = "system.switch.enabled";
    modules = [ { system.switch.enabled = true; } ];
  };
  misspelt-users = {
    vm = true;
    misspelt = "users.users.alice.isNormaluser";
    modules = [ { users.users.alice.isNormaluser = true; } ];
  };
  misspelt-networking = {
    vm = true;
    misspelt = "networking.hostname";
    modules = [ { networking.hostname = "machine"; } ];
  };
  misspelt-fileSystems = {
    misspelt = "fileSystems.\"/srv\".fstype";
    modules = [ { fileSystems."/srv".fstype = "ext4"; } ];
  };
}
