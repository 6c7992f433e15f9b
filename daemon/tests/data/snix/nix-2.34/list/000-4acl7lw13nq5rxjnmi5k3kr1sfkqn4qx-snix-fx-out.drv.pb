
YW
04acl7lw13nq5rxjnmi5k3kr1sfkqn4qx-snix-fx-out.drv ¬<[0pãî1–h!õ€HÃó©∑SÒsr√ºÂ‘Øì≤ˇ*å∏|ﬁHvÿËóƒ¢~|⁄⁄ì∫M?”,d!6B‡H§’!m∞H‰ƒ=˙øÌÊnCX÷sÎ+Ÿ√† †V0>R2“ö:„)°”ßiP•–f»pvêÊlj_Ω£"-1si7zi4px3c7cj6ygh9bi30s1wmgzclk-snix-fx-text"247as8j7088v22r1csc43ykdsjgddlz3y-snix-fx-fixed.drv"9v4mynwynb11nxrpdpzx0wgf40zj4ic3d-snix-fx-fixed-copied.drv