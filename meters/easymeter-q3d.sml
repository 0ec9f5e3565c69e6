>D
>B
->sensor53 r
>M 1
; EasyMeter Q3D (Q3DB1024 V3.04) info interface, pushes every 2 s: 9600 7E1, no CRC
+1,3,o,0,9600,Q3D
1,1-0:1.8.0*255(@1,Import,kWh,import,4
1,1-0:2.8.0*255(@1,Export,kWh,export,4
1,1-0:1.7.0*255(@1,Power,W,power,2
1,1-0:21.7.0*255(@1,Power L1,W,power_l1,2
1,1-0:41.7.0*255(@1,Power L2,W,power_l2,2
1,1-0:61.7.0*255(@1,Power L3,W,power_l3,2
1,0-0:96.1.255*255(@#),Meter id,,meter_id,0
#
