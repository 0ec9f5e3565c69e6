>D
>B
->sensor53 r
>M 1
; Kaifa MA105/MA304 (KFM5KAIFA-METER), Dutch DSMR 4.2 P1 port: 115200 8N1, CRC checked
+1,3,o,0,115200,P1,1
1,1-0:1.8.1(@1,Import T1,kWh,import_t1,3
1,1-0:1.8.2(@1,Import T2,kWh,import_t2,3
1,1-0:2.8.1(@1,Export T1,kWh,export_t1,3
1,1-0:2.8.2(@1,Export T2,kWh,export_t2,3
1,0-0:96.14.0(@1,Tariff,,tariff,0
1,1-0:1.7.0(@1,Power import,kW,power_imp,3
1,1-0:2.7.0(@1,Power export,kW,power_exp,3
1,0-0:96.7.21(@1,Power failures,,failures,0
1,0-0:96.7.9(@1,Long power failures,,failures_long,0
1,1-0:21.7.0(@1,Power L1,kW,power_l1,3
1,1-0:41.7.0(@1,Power L2,kW,power_l2,3
1,1-0:61.7.0(@1,Power L3,kW,power_l3,3
1,1-0:31.7.0(@1,Current L1,A,amps_l1,0
1,1-0:51.7.0(@1,Current L2,A,amps_l2,0
1,1-0:71.7.0(@1,Current L3,A,amps_l3,0
1,=h<hr/>
1,0-1:24.2.1(@(1:1,Gas,m3,gas,3
1,=m 1+2 @1,Import total,kWh,import,3
#
