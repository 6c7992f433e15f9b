
VT
.5qyq9h3iiz90g1221d88xza3dbxgpx6f-snix-fx-fixed L|™ΫύPη©Q…ώ­^αD©ΆύΧxκυςΫύb™Ox 7Πτβθ‘ή<ΓίD7ziϋ±|hπ€–K/Πqό*)
snix-fx-fixed.drv~|ΪΪ“ΊM?Σ,d!6BΰH¤Υ!