# The local-overlay:// store URL for a snix-lower-store socket, built the way
# `snix-lower-store store-url` builds it (daemon/src/overlay_url.rs): every
# byte of every path (the socket's too) but the RFC 3986 unreserved
# characters and '/' is written as %XX (upper-case hex), and the lower store
# URL, itself carrying an encoded `real`, is encoded once more as the value of
# `lower-store`.
#
# builtins only, so that tests/nix-parse can evaluate it without nixpkgs and
# compare it with the CLI's output. Only ASCII (without NUL) is supported:
# Nix has no way to turn a single non-ASCII byte into its code.
let
  hexDigits = "0123456789ABCDEF";
  hexByte =
    n: builtins.substring (n / 16) 1 hexDigits + builtins.substring (n - 16 * (n / 16)) 1 hexDigits;

  # Byte value of every ASCII character but NUL. Printable characters from a
  # literal; control characters from JSON escapes (one byte each below 0x80).
  printable = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
  controlChar = n: builtins.fromJSON ''"\u00${hexByte n}"'';
  codes = builtins.listToAttrs (
    builtins.genList (i: {
      name = builtins.substring i 1 printable;
      value = 32 + i;
    }) (builtins.stringLength printable)
    ++ builtins.genList (i: {
      name = controlChar (i + 1);
      value = i + 1;
    }) 31
    ++ [
      {
        name = controlChar 127;
        value = 127;
      }
    ]
  );

  isUnreserved = c: builtins.match "[A-Za-z0-9._~/-]" c != null;

  encodeChar =
    c:
    if isUnreserved c then
      c
    else if codes ? ${c} then
      "%" + hexByte codes.${c}
    else
      throw "snix-lower-store: store URL: only ASCII paths can be percent-encoded in Nix (got a byte outside it)";

  percentEncode =
    s:
    builtins.concatStringsSep "" (
      map encodeChar (builtins.genList (i: builtins.substring i 1 s) (builtins.stringLength s))
    );

  # The socket path is encoded too: Nix percent-decodes the path of a
  # unix:// URL, and an unencoded '?', '#' or '%' would cut or change it.
  lowerStoreUrl =
    { socket, lowerDir }: "unix://${percentEncode socket}?real=${percentEncode lowerDir}";

  storeUrl =
    {
      socket,
      lowerDir,
      upperLayer,
      state ? null,
      root ? null,
    }:
    let
      query =
        (if root == null then [ ] else [ "root=${percentEncode root}" ])
        ++ (if state == null then [ ] else [ "state=${percentEncode state}" ])
        ++ [
          "lower-store=${
            percentEncode (lowerStoreUrl {
              inherit socket lowerDir;
            })
          }"
          "upper-layer=${percentEncode upperLayer}"
          "check-mount=true"
        ];
    in
    "local-overlay://?" + builtins.concatStringsSep "&" query;
in
{
  inherit percentEncode lowerStoreUrl storeUrl;
}
