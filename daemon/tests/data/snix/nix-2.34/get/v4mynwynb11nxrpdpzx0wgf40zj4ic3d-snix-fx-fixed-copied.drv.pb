
b`
9v4mynwynb11nxrpdpzx0wgf40zj4ic3d-snix-fx-fixed-copied.drv Â0?ÎÑÂ"B¨Ä4fHñy›oúÍöÏ|îwqì˜*ğ”%ˆ ¡‚2ø´»å.‹~ç'"ÓÓûİ¥Lq«äsbŞyıc