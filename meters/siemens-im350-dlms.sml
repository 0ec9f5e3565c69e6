>D
>B
->sensor53 r

; Siemens IM350 / IM351 (Austrian smart meter customer interface, 115200 8N1): encrypted DLMS
; push every second, HDLC with general-glo-ciphering. Replace the demo keys with your grid
; operator's: =so4 the encryption key (GUEK), =so5 the authentication key (GAK, optional: with it
; the telegram's tag is checked). The masks count from the notification body:
; 02 09 (structure of 9) 09 0C (the date-time) then eight double-long-unsigned registers.
>M 1
+1,3,r,0,115200,IM350
1,=so4,000102030405060708090A0B0C0D0E0F
1,=so5,D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF
1,0209090Cx13UUuuUUuu@1000,Import,kWh,Total_in,3
1,0209090Cx18UUuuUUuu@1000,Export,kWh,Total_out,3
1,0209090Cx23UUuuUUuu@1000,Reactive import,kvarh,Reactive_in,3
1,0209090Cx28UUuuUUuu@1000,Reactive export,kvarh,Reactive_out,3
1,0209090Cx33UUuuUUuu@1,Power import,W,Power_in,0
1,0209090Cx38UUuuUUuu@1,Power export,W,Power_out,0
#
