
T
R
,qjp8nvb8d5zxlbrx8nab09k0svxd4wd8-snix-fx-out %¨à.Z×³S
Êç¯ë*(ô‰—j@ýjÎŒæw#.®“²ÿ*Œ¸|ÞHvØè—Ä¢ÎôûújCýŽPB„ÒqÀ„=.€  ƒŠ×`%(

ý,oãY0™:$^Í¬z¦ ë;Q
snix-fx-key-1@PI>Ö{•0MŸ<÷©Fƒšï£QuM¿xŠœð¼BÈa~åÑs›^)°dR‚JI$CZ¯*éæ*€÷ìcV"-1si7zi4px3c7cj6ygh9bi30s1wmgzclk-snix-fx-text".5qyq9h3iiz90g1221d88xza3dbxgpx6f-snix-fx-fixed*'
snix-fx-out.drv_öE‰¸óøù‹¶<$ú ‹4jf