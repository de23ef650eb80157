"""`iso customize` / `pxe customize`: self-installing live media (docs/customize.md).

The package turns the customize options into the small initrd archive the live system
reads at boot (a live Ignition config plus network keyfiles), and writes it into an
ISO's embed area or after a PXE initramfs. Every input is read and checked here, in
memory, before the media commands write a single byte.

- `ignition`: Ignition 3.x parsing (spec versions, key schema, unused-key warnings),
  normalisation, and the generated spec 3.3.0 config with data URLs.
- `keyfile`: NetworkManager keyfile checks with NetworkManager's own parser.
- `nmstate`: nmstate YAML/JSON to keyfiles through a real nmstate implementation.
- `build`: the processing order and feature gating; the resulting initrd members.

The ISO and PXE operations around `build` are in nestos_inst.media.customize.
"""
