
][
5pg69dvbkzkgk3zr6bv9x99gjxmcq9fvp-snix-fx-fixed-copied Yßzq©×Ï±5Àp$€²l ±$*-ÄèŞTÁW ?î‚„} ‘ñÓ r- —ëÔ‘<;¤×‡îCc2î4ü*0
snix-fx-fixed-copied.drvm°HäÄ=ú¿íænCXÖsë+Ù