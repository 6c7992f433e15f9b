
[Y
247as8j7088v22r1csc43ykdsjgddlz3y-snix-fx-fixed.drv ’§
‰i¬‚Hõ	)ÝÎ©ÏñÊ¯j×pç¯Ò.ÑàOë%à ñ†‰IÇÊäÌ<2ÄË0w;,Î€,µ Æ4^=¸