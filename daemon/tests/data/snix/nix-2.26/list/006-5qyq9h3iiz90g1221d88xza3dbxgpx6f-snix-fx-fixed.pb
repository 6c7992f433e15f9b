
VT
.5qyq9h3iiz90g1221d88xza3dbxgpx6f-snix-fx-fixed ŽL|™ÛýPç©Q…þ­^áD©¢ý×xêõòÛýbš™ux 7Ðôâè‘Þ<ÃßD7zišû±|hð€–K/Ðqü*)
snix-fx-fixed.drv~|ÚÚ“ºM?Ó,d!6BàH¤Õ!2$ X‘µµ"Õßmð±ûÙÒ´üqc¯4Ð‚†¢èFö¾