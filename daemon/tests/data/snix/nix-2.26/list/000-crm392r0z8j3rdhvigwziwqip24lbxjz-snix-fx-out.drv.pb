
YW
0crm392r0z8j3rdhvigwziwqip24lbxjz-snix-fx-out.drv ÇÏŞéé:Ÿ!8V¸›ğzzŠ}¬Ay<ĞÃ¨Ò…WPZ“²ÿ*Œ¸|ŞHvØè—Ä¢~|ÚÚ“ºM?Ó,d!6BàH¤Õ!ˆ a„2›Büv®Å®ßwW¹Ç\}¿wx-W‚Ñ:=×"-1si7zi4px3c7cj6ygh9bi30s1wmgzclk-snix-fx-text"247as8j7088v22r1csc43ykdsjgddlz3y-snix-fx-fixed.drv